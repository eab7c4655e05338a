# %% [markdown]
# # 02 · Prompt encoding: one CLIP vector, a T5 sequence, and zeros for positions
#
# Before any image work, `FluxKontextPipeline.encode_prompt` turns the instruction into
# three tensors: the T5 sequence `prompt_embeds` ([1, 512, 4096] at full size), the pooled
# CLIP vector `pooled_prompt_embeds` ([1, 768]) and `text_ids` ([512, 3]). This notebook
# rebuilds that step from the tokenizers up and checks every piece against diffusers. In the
# whole machine (`00_overview`) this is the text lane: it runs once per edit, and its three
# outputs go straight into the transformer.
#
# ## What you will learn
# - how a prompt is tokenized for CLIP (always 77 tokens) and for T5 (`max_sequence_length`
#   tokens, 512 by default), token by token
# - which single CLIP vector FLUX keeps (the *pooled* one), and why CLIP's padding cannot change it
# - what "no attention mask" means for T5: the padding gets states of its own, and takes part in
#   attention; you will measure how much it moves the prompt's states
# - how `prompt` and `prompt_2`, lists of prompts, `num_images_per_prompt`, `max_sequence_length`
#   and `text_ids` fit together, by rebuilding `encode_prompt` and matching diffusers exactly
# - how to see what CLIP silently cuts off a long prompt, and what to do about it
#
# ## Prerequisites
# - `00_overview` (the whole pipeline and its data flow)
# - PyTorch indexing; the idea of a transformer encoder, attention and an attention mask

# %%
import kontext_teach as kt

device = kt.setup()

# %% [markdown]
# ## Theory
#
# **Two encoders, two different jobs.** FLUX.1 (and so Kontext) reads the instruction with two
# pretrained, frozen text encoders:
#
# | | CLIP ViT-L/14, text tower (`text_encoder`) | T5 v1.1 XXL, encoder (`text_encoder_2`) |
# |---|---|---|
# | reads | `prompt` | `prompt_2` (default: `prompt`) |
# | tokenizer | byte-pair encoding, 49,408 tokens | sentencepiece, 32,000 pieces + 100 sentinels |
# | length | always 77: cut or padded | `max_sequence_length`, at most 512: cut or padded |
# | attention | causal: token *i* sees tokens 0..*i* | bidirectional, and FLUX passes **no attention mask** |
# | FLUX keeps | **one** vector per prompt: the final state at the end-of-text token, [B, 768] | **every** state, padding included: [B, 512, 4096] |
# | goes to | added into the conditioning vector `temb` (with the timestep and guidance), which modulates every block (AdaLN) | `context_embedder`, then the text tokens of every attention in the transformer |
#
# In formulas, for a prompt tokenized to ids $x_0..x_{76}$ (CLIP) and $y_0..y_{L-1}$ (T5):
#
# $$\text{pooled} = \mathrm{LN}_\text{final}\big(h^\text{CLIP}(x)\big)_{\,e}, \quad e = \text{first position with } x_e = \texttt{<|endoftext|>}$$
# $$\text{prompt\_embeds} = h^\text{T5}(y_0..y_{L-1}) \text{ with every token attending to every token}, \qquad \text{text\_ids} = 0_{L\times 3}$$
#
# **`text_ids` are positions, not token ids.** Inside the transformer every token gets a
# 3-axis RoPE position; text tokens all get (0, 0, 0). RoPE at angle 0 is the identity, so
# it is *applied* to text, it just does not rotate it. Two common misreadings: that
# `text_ids` hold the token ids (they are zeros), and that zeros mean "no RoPE on text" with
# no effect at all: a text query still scores image keys differently depending on the
# image token's position, because the image keys are rotated.
#
# **Two more misreadings.** "Too long a prompt makes CLIP behave strangely": CLIP simply
# drops every token past 75 (77 minus the start and end tokens), and diffusers only logs a
# warning; what is lost is lost from the pooled vector only, T5 still reads up to 511 prompt
# tokens. And "the padding is ignored": for CLIP it is (the causal attention puts it after
# the pooled token), but T5 gets no mask, so its padding tokens get real, prompt-dependent
# states that the transformer attends to. BFL's reference code does the same
# (`attention_mask=None`) and the released model is used with exactly these states, so it is
# not a bug to fix at inference; but it does mean `max_sequence_length` is not a neutral
# speed knob.

# %% [markdown]
# ## Practice
#
# ### 1. The whole step first
# The embedded miniature uses the same classes as FLUX.1-Kontext-dev at tiny widths (the
# widths of its CLIP and T5 states are printed below, next to FLUX's). Its CLIP tokenizer has OpenAI's real
# BPE vocabulary, so its CLIP tokens are FLUX's; its T5 tokenizer is a small sentencepiece
# model with T5's id layout (pad 0, end 1, unknown 2), trained on the series' own prompts, so
# it splits words more finely than the real T5 tokenizer and knows fewer characters.

# %%
import matplotlib.pyplot as plt
import torch

from kontext_teach.anatomy import full_size
from kontext_teach import prompt_encoding as pe

pipe = kt.load_pipeline()
PROMPT = "Make the red circle blue and keep the background."

with torch.no_grad():
    prompt_embeds, pooled_prompt_embeds, text_ids = pipe.encode_prompt(PROMPT)
print("prompt_embeds (T5)       ", tuple(prompt_embeds.shape))
print("pooled_prompt_embeds     ", tuple(pooled_prompt_embeds.shape))
print("text_ids                 ", tuple(text_ids.shape), "all zero:", not text_ids.any().item())
print(f"state widths: CLIP {pipe.text_encoder.config.hidden_size}, T5 {pipe.text_encoder_2.config.d_model} "
      f"(FLUX.1-Kontext-dev: CLIP {full_size.CLIP_TEXT['hidden_size']}, T5 {full_size.T5_ENCODER['d_model']})")

# %% [markdown]
# ### 2. Tokens: two vocabularies, two lengths
# CLIP's tokenizer lower-cases the text, splits it into byte-pair tokens (`_` marks the end of
# a word), adds `<|startoftext|>` and `<|endoftext|>`, then pads with `<|endoftext|>` up to
# 77. T5's tokenizer splits into sentencepiece pieces (`_` marks the start of a word), adds
# `</s>` and pads with `<pad>` (id 0) up to `max_sequence_length`. Both use `truncation=True`
# and `padding="max_length"`, exactly as `encode_prompt` does.

# %%
clip_ids = pe.clip_token_ids(pipe.tokenizer, [PROMPT])  # [1, 77]
t5_ids = pe.t5_token_ids(pipe.tokenizer_2, [PROMPT], max_sequence_length=512)  # [1, 512]
for name, tok, ids in (("CLIP", pipe.tokenizer, clip_ids), ("T5", pipe.tokenizer_2, t5_ids)):
    real = len(tok(PROMPT).input_ids)  # prompt + special tokens, before padding
    print(f"{name:<4} vocabulary {len(tok):>6,}  ids {tuple(ids.shape)}  prompt + special tokens {real:>3}  "
          f"padding {ids.shape[1] - real:>3}  pad id {tok.pad_token_id}")

# %%
fig = pe.draw_tokens(PROMPT, pipe.tokenizer, pipe.tokenizer_2)
plt.show()

# %% [markdown]
# Read the two rows: the same sentence becomes a different number of tokens in each (the
# miniature's small T5 vocabulary splits "Make" and "and" into pieces; the real one would
# not). The orange box is the only CLIP position whose state FLUX uses: everything else in
# the CLIP row is computed and thrown away. Everything in the T5 row, padding included, is
# kept.

# %% [markdown]
# ### 3. CLIP: which vector is pooled
# CLIP's text tower is causal (each token attends only to itself and earlier tokens); its last
# step is a LayerNorm (`final_layer_norm`). The pooled vector is the normalised final state at
# the **first** `<|endoftext|>`: the padding uses the same id, so "first" matters. Below we
# take the hidden states after the last layer, apply the final LayerNorm ourselves, pick that
# row, and check it against CLIP's own `pooler_output` and the pipeline's pooled embedding.

# %%
with torch.no_grad():
    clip_out = pipe.text_encoder(clip_ids, output_hidden_states=True)
last_layer = clip_out.hidden_states[-1]  # [1, 77, D]: after the last layer, before the final LayerNorm
normed = pipe.text_encoder.final_layer_norm(last_layer)  # [1, 77, D]
position = pe.pooled_positions(clip_ids, pipe.tokenizer.eos_token_id)  # [1]
ours = normed[torch.arange(1), position]  # [1, D]
print("pooled position:", position.tolist(), "=", pipe.tokenizer.convert_ids_to_tokens([clip_ids[0, position].item()]))

kt.compare("pooled vs pooler_output", ours, clip_out.pooler_output)
kt.compare("pooled vs encode_prompt", ours, pooled_prompt_embeds)
_ = kt.compare("clip_pooled vs encode_prompt",
               pe.clip_pooled(pipe.text_encoder, clip_ids, pipe.tokenizer.eos_token_id), pooled_prompt_embeds)

# %% [markdown]
# One detail for readers of the transformers source: FLUX's CLIP config still carries the old
# `eos_token_id = 2`, and for that value `CLIPTextModel` pools at `argmax(input_ids)` instead of
# the first end-of-text id. It is the same token: `<|endoftext|>` has the largest id (49407)
# and `argmax` returns the first maximum.

# %%
print("argmax rule == first end-of-text rule:",
      torch.equal(clip_ids.argmax(dim=-1), pe.pooled_positions(clip_ids, pipe.tokenizer.eos_token_id)))

# %% [markdown]
# **Why CLIP's padding cannot matter, and T5's can.** The picture shows which tokens each
# token's state may use, for a 6-token prompt padded to 16. In CLIP (left) the pooled row only
# reaches the prompt; the padding lies to its right, out of reach. In FLUX's T5 (right) there
# is no mask: every state uses the padding, and the padding uses the prompt.

# %%
fig = pe.draw_who_sees_whom(num_prompt_tokens=6, length=16)
plt.show()

# %% [markdown]
# **Check:** run CLIP on the prompt's tokens alone, without any padding, and take the state
# at its last token (the end-of-text): the same pooled vector.

# %%
unpadded = pipe.tokenizer([PROMPT], return_tensors="pt").input_ids  # [1, 12]: no padding at all
with torch.no_grad():
    pooled_unpadded = pipe.text_encoder(unpadded).last_hidden_state[:, -1]  # [1, D]
_ = kt.compare("CLIP pooled, no padding", pooled_unpadded, pooled_prompt_embeds)

# %% [markdown]
# ### 4. T5: padding without an attention mask
# T5's encoder is bidirectional. `encode_prompt` pads the ids to `max_sequence_length` and
# calls `text_encoder_2(ids)` without `attention_mask`, so the `<pad>` tokens are ordinary
# tokens to the encoder: they get states, those states depend on the prompt, and the prompt's
# own states depend on how many pads follow. Our T5 step is exactly that call; the check is
# against the pipeline's `prompt_embeds`.

# %%
states = pe.t5_states(pipe.text_encoder_2, t5_ids)  # [1, 512, D], every state kept
_ = kt.compare("T5 states vs encode_prompt", states, prompt_embeds)

# %%
SHORT_LENGTH, OTHER = 40, "remove the square"
n_t5, n_other = (len(pipe.tokenizer_2(p).input_ids) for p in (PROMPT, OTHER))  # prompt pieces + </s>
states_40, other_40 = (pe.t5_states(pipe.text_encoder_2, pe.t5_token_ids(pipe.tokenizer_2, [p], SHORT_LENGTH))[0]
                       for p in (PROMPT, OTHER))  # [40, D] each
shared = slice(max(n_t5, n_other), SHORT_LENGTH)  # positions where both hold <pad>
pad_change = (states_40[shared] - other_40[shared]).norm(dim=-1) / states_40[shared].norm(dim=-1)
pads = states_40[n_t5:]  # [40 - n_t5, D]: this prompt's padding states
within = (pads - pads.mean(dim=0)).norm(dim=-1) / pads.norm(dim=-1)  # how far each pad is from their mean
print(f"{SHORT_LENGTH - n_t5} padding states after {PROMPT!r}: they differ from their own mean by "
      f"{within.min().item():.0%} to {within.max().item():.0%} of their norm (relative positions only)")
print(f"the same <pad> ids at the same positions after {OTHER!r}: states differ by "
      f"{pad_change.min().item():.0%} to {pad_change.max().item():.0%} of their norm")

# %%
fig, axes = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True)
panels = ((states_40, f"{PROMPT!r}: {n_t5} tokens, then {SHORT_LENGTH - n_t5} <pad>"),
          (states_40 - other_40, f"minus the states of {OTHER!r}: the padding columns differ too"))
for ax, (values, title) in zip(axes, panels):
    image = ax.imshow(values.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
    ax.axvline(n_t5 - 0.5, color="black", lw=1.5)
    ax.set_ylabel("feature")
    ax.set_title(title, fontsize=9)
axes[1].axvline(n_other - 0.5, color="black", lw=1, ls="--")
axes[1].set_xlabel(f"position in the T5 sequence (padded to {SHORT_LENGTH}); lines: where each prompt's padding starts")
fig.colorbar(image, ax=axes, fraction=0.025)
fig.suptitle(f"T5 states, padding included ({states_40.shape[1]} features here, "
             f"{full_size.T5_ENCODER['d_model']} in FLUX)", fontsize=10)
plt.show()

# %% [markdown]
# The padding columns are not blank, and they are not the same for the two prompts: through
# attention, every `<pad>` state carries information about the prompt before it. (Within one
# prompt the pads differ from each other only through T5's relative position biases.)

# %% [markdown]
# **How much does the amount of padding move the prompt's own states?** Encode the same prompt
# with different `max_sequence_length` and compare its real tokens' states with those at 512
# (`pe.padding_drift`: the largest change over the prompt's tokens, relative to the state's
# size). The exact numbers depend on the weights (the miniature's are seeded random ones, the
# real T5-XXL's would give other values); what does not depend on them is that the change is
# zero only at 512 itself. Exercise 3 turns the mask on and shows the difference disappear.

# %%
LONGER = "Replace the red circle in the top left corner with a gold star and keep the blue square."
LENGTHS = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
drift = {}
for prompt in (PROMPT, LONGER):
    n = len(pipe.tokenizer_2(prompt).input_ids)
    lengths = [n] + [L for L in LENGTHS if L > n]  # n: no padding at all
    drift[prompt] = (lengths, pe.padding_drift(pipe.text_encoder_2, pipe.tokenizer_2, prompt, lengths))
    print(f"{n} T5 tokens | " + " | ".join(f"{L}: {d:.3f}" for L, d in zip(*drift[prompt]) if L in (n, 64, 256, 512)))

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
for (prompt, (lengths, values)), marker in zip(drift.items(), "os"):
    ax.plot(lengths, values, marker + "-", label=f"{prompt[:40]!r}... ({lengths[0]} T5 tokens)")
ax.set_xscale("log", base=2)
ax.set_xlabel("max_sequence_length (log scale; first point: no padding)")
ax.set_ylabel("largest relative change\nof the prompt's T5 states")
ax.set_title("Same prompt, more or less padding: the prompt's own states move (reference: 512)", fontsize=10)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# So `max_sequence_length` is not only a speed knob. A shorter T5 sequence does make the
# transformer cheaper (its attention runs over text + target + context tokens), but it also
# changes every text state the transformer sees, away from the 512-token states that BFL's
# scripts (512 for the dev models, 256 for schnell) and diffusers' default produce, and that
# LoRAs are trained on. diffusers refuses more than 512 in the pipeline's `check_inputs`; our
# `pe.t5_token_ids` refuses it with advice:

# %%
try:
    pe.t5_token_ids(pipe.tokenizer_2, [PROMPT], max_sequence_length=1024)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# ### 5. `encode_prompt`, rebuilt
# The pieces together (`pe.encode_prompt`): `prompt` goes to CLIP, `prompt_2` (if empty, then
# `prompt`) to T5; a list of prompts is a batch; `num_images_per_prompt` repeats each prompt's
# tensors, copies of one prompt next to each other (p0, p0, p1, p1); `text_ids` are zeros, one
# row per T5 position. Each case is compared with diffusers' `encode_prompt`.

# %%
CASES = [
    dict(prompt=PROMPT),
    dict(prompt=[PROMPT, "remove the square"], max_sequence_length=64),
    dict(prompt="mirror the image", prompt_2="flip the picture left to right", num_images_per_prompt=3,
         max_sequence_length=16),
    dict(prompt=["turn the star gold", "erase the ring"], prompt_2=["paint the star gold", "remove the ring"],
         num_images_per_prompt=2, max_sequence_length=77),
]
for case in CASES:
    ours = pe.encode_prompt(pipe.components, **case)
    with torch.no_grad():
        theirs = pipe.encode_prompt(**case)
    batch = len(case["prompt"]) if isinstance(case["prompt"], list) else 1
    label = f"B={batch} n={case.get('num_images_per_prompt', 1)}"
    for name, mine, library in zip(("T5", "pooled", "text_ids"), ours, theirs):
        kt.compare(f"{name} {label}", mine, library)

# %% [markdown]
# Two consequences worth seeing. `prompt_2` changes only the T5 sequence, never the pooled
# vector; and an empty `prompt_2` is not "no text for T5": diffusers treats `""` like `None`
# and sends `prompt` to T5 instead.

# %%
t5_a, pooled_a, _ = pe.encode_prompt(pipe.components, PROMPT, max_sequence_length=32)
t5_b, pooled_b, _ = pe.encode_prompt(pipe.components, PROMPT, "remove the square", max_sequence_length=32)
t5_c, _, _ = pe.encode_prompt(pipe.components, PROMPT, "", max_sequence_length=32)
print("another prompt_2 -> pooled identical:", torch.equal(pooled_a, pooled_b),
      "| T5 identical:", torch.equal(t5_a, t5_b))
print("prompt_2=''      -> T5 identical to prompt_2=None:", torch.equal(t5_a, t5_c))

# %% [markdown]
# **`text_ids` inside the transformer.** The transformer's `FluxPosEmbed` turns each id row into
# cos/sin tables; for the all-zero text ids they are cos = 1, sin = 0: the identity rotation.
# The image keys are rotated by their (row, column), so one text query scores the *same* key
# content differently at different image positions.

# %%
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

rope = FluxPosEmbed(theta=10000, axes_dim=list(pipe.transformer.config.axes_dims_rope))
head_dim = pipe.transformer.config.attention_head_dim  # = sum(axes_dims_rope)
cos, sin = rope(text_ids)  # [512, head_dim] each: one column per feature of an attention head
print(f"text ids -> cos all 1: {bool((cos == 1).all())} | sin all 0: {bool((sin == 0).all())} "
      f"| {tuple(cos.shape)}: one column per feature of a {head_dim}-wide head")

generator = torch.Generator().manual_seed(0)
query, key = torch.randn(2, 1, 1, 1, head_dim, generator=generator)  # one head: [B=1, S=1, H=1, head_dim]
text_query = apply_rotary_emb(query, rope(torch.zeros(1, 3)), sequence_dim=1)  # unchanged
for row, col in [(0, 0), (0, 3), (3, 0), (3, 3)]:
    image_key = apply_rotary_emb(key, rope(torch.tensor([[0.0, row, col]])), sequence_dim=1)
    score = (text_query * image_key).sum().item()
    print(f"same key content at image position ({row}, {col}): text-image score {score:+.3f}")

# %% [markdown]
# **Full size, without memory.** The same function on FLUX.1-Kontext-dev's real CLIP-L and
# T5-XXL, built on PyTorch's meta device (shapes, no weights): the shapes of the facts sheet,
# computed rather than typed.

# %%
meta = {**full_size.meta_components(), "tokenizer": pipe.tokenizer, "tokenizer_2": pipe.tokenizer_2}
counts = full_size.parameter_counts(meta)
print(f"CLIP text encoder {counts['text_encoder'] / 1e6:.0f} M parameters | "
      f"T5 encoder {counts['text_encoder_2'] / 1e9:.2f} B parameters")
for prompts, n in ((PROMPT, 1), ([PROMPT, "remove the square"], 2)):
    t5_full, pooled_full, ids_full = pe.encode_prompt(meta, prompts, num_images_per_prompt=n)
    print(f"B={1 if isinstance(prompts, str) else len(prompts)} n={n}: prompt_embeds {list(t5_full.shape)}  "
          f"pooled {list(pooled_full.shape)}  text_ids {list(ids_full.shape)}")

# %% [markdown]
# ### 6. What CLIP cuts off a long prompt
# CLIP reads 75 prompt tokens; a detailed instruction easily needs more. diffusers then logs a
# warning through its logger, which in a notebook is easy to miss (and the series silences
# library logs). `pe.truncation_report` tokenizes like the pipeline and returns what is kept
# and what is dropped, in the prompt's own words; `pe.check_prompt` returns the dropped text
# and warns (or, with `strict=True`, raises a `ValueError` that says what to do).

# %%
LONG_PROMPT = ("Replace the red circle in the top left corner with a gold star. Keep the blue square on the right "
               "exactly where it is, with the same size and colour. Make the background a calm, foggy grey, like an "
               "old photo of a quiet street. Do not change anything else in the picture; the lighting, the shadows "
               "and the frame stay the same. Add a small white cloud above the star, and a thin black line under the "
               "square.")
report = pe.truncation_report(LONG_PROMPT, pipe.tokenizer)
print(f"{len(LONG_PROMPT.split())} words -> {report.prompt_tokens} CLIP tokens (budget {report.budget})")
print(report.message())
print("What to do:", report.advice())

# %% [markdown]
# **Check** against diffusers: capture the warning `encode_prompt` logs and compare the text it
# names with our dropped tokens (diffusers decodes tokens, so its text is lower-cased).

# %%
with pe.diffusers_warnings() as logged, torch.no_grad():
    pipe.encode_prompt(LONG_PROMPT)
clip_warning = next(message for message in logged if "CLIP" in message)
ours_decoded = pipe.tokenizer.decode(list(report.dropped_ids))
print("diffusers names:", clip_warning.split(": ", 1)[1])
print("ours, decoded  :", [ours_decoded])
assert repr([ours_decoded]) in clip_warning

# %% [markdown]
# T5 truncates too, when `prompt_2` needs more than `max_sequence_length` minus one tokens.
# Here our report and diffusers' warning disagree. diffusers' T5 warning slices the dropped
# tokens at CLIP's length, 77, whatever `max_sequence_length` is (`_get_t5_prompt_embeds` in
# `pipeline_flux_kontext.py`): with 32 it names only the tail of what T5 lost, and with more
# than 77 it would name text that T5 did read. So the check is against what T5 is actually
# given: the tokenizer's cut.

# %%
t5_report = pe.truncation_report(LONG_PROMPT, pipe.tokenizer_2, max_length=32)
with pe.diffusers_warnings() as logged, torch.no_grad():
    pipe.encode_prompt(LONG_PROMPT, max_sequence_length=32)
t5_warning = next(message for message in logged if "max_sequence_length" in message)
print(t5_report.message())
print("diffusers names:", t5_warning.split(": ", 1)[1][:90] + " ...")
full_ids = pipe.tokenizer_2(LONG_PROMPT, add_special_tokens=False).input_ids
given_to_t5 = pe.t5_token_ids(pipe.tokenizer_2, [LONG_PROMPT], 32)[0].tolist()
assert given_to_t5 == full_ids[: t5_report.budget] + [pipe.tokenizer_2.eos_token_id]
assert list(t5_report.dropped_ids) == full_ids[t5_report.budget:]
print("our report = the tokenizer's cut: True")

# %%
print("check_prompt, short prompt  ->", repr(pe.check_prompt(PROMPT, pipe.tokenizer)))
try:
    pe.check_prompt(LONG_PROMPT, pipe.tokenizer, strict=True)
except ValueError as error:
    print("check_prompt(strict=True)   -> ValueError:", error)

# %% [markdown]
# ### 7. Try your own prompt
# `pe.describe_prompt` puts it all in one text: both tokenizations, the counts, the pooled
# position, the `<unk>` pieces T5 cannot spell and what each encoder would drop. Called once
# plainly, then behind a widget (type a prompt, move the T5 length).

# %%
print(pe.describe_prompt("Make the circle BLUE!", pipe.tokenizer, pipe.tokenizer_2, max_sequence_length=32))

# %%
import html

import ipywidgets as widgets
from IPython.display import display

report_view = widgets.HTML()  # the widget only shows text; pe.describe_prompt computes it


def show_prompt(prompt, max_sequence_length):
    text = pe.describe_prompt(prompt, pipe.tokenizer, pipe.tokenizer_2, max_sequence_length)
    report_view.value = f"<pre>{html.escape(text)}</pre>"


_ = widgets.interact(show_prompt, prompt=widgets.Text(value=PROMPT, layout=widgets.Layout(width="90%")),
                     max_sequence_length=widgets.IntSlider(min=16, max=512, step=16, value=64,
                                                           style={"description_width": "initial"}))
display(report_view)

# %% [markdown]
# ## Summary
# - CLIP always reads 77 tokens (75 of them the prompt's); FLUX keeps one vector of it: the
#   final-LayerNorm state at the first `<|endoftext|>`, [B, 768]. Its attention is causal, so
#   the padding after that token cannot change it.
# - T5 reads `prompt_2` (default `prompt`) padded to `max_sequence_length` ≤ 512 and FLUX keeps
#   every state, [B, 512, 4096]. No attention mask: padding states are real, prompt-dependent
#   vectors, and the prompt's own states move when the amount of padding changes.
# - `text_ids` are zeros [512, 3]: RoPE positions, not token ids. Rotation by zero is the
#   identity on text, yet text-image scores still depend on where the image token is.
# - `num_images_per_prompt` repeats each prompt's tensors next to each other; an empty
#   `prompt_2` means "use `prompt`".
# - `pe.encode_prompt` equals `FluxKontextPipeline.encode_prompt` exactly; full-size shapes
#   come from the meta device.
# - Past 75 CLIP tokens the prompt only reaches T5: check it with `pe.check_prompt`, and put a
#   short summary in `prompt`, the full text in `prompt_2`.

# %% [markdown]
# ## Exercises
# Solutions: `kontext_teach.solutions.s02_prompt_encoding` (checked by
# `tests/test_solutions_02.py`).
#
# 1. **CLIP's blind spot.** Write `change_from_extra_text(components, prompt, extra)` that
#    returns the largest absolute change of the pooled vector and of the T5 states when `extra`
#    is appended to `prompt`. Try it with a prompt that already fills CLIP's 75 tokens, and with
#    a short one. Before running: which number will be exactly 0, and why?
# 2. **One instruction, two prompts.** Write `split_for_encoders(prompt, tokenizer)` that returns
#    `(prompt, prompt_2)`: for CLIP the longest run of whole sentences from the start that fits
#    (use `pe.truncation_report`), for T5 the whole text. Check that `pe.check_prompt` is silent
#    on your CLIP prompt.
# 3. **Turn the mask on.** Write `t5_states_with_mask(text_encoder_2, tokenizer_2, prompt,
#    max_sequence_length)` that passes the tokenizer's `attention_mask` to T5 and returns the
#    prompt's own states. Show that they no longer depend on `max_sequence_length`, and that they
#    differ from what the pipeline computes. Why would switching the mask on at inference be a
#    bad idea for FLUX.1 Kontext, and when could it be a reasonable choice?

# %% [markdown]
# The solutions at work (try the exercises first):

# %%
from kontext_teach.solutions import s02_prompt_encoding as solutions

run_on = " ".join(["and a red circle"] * 30)  # one sentence, past 75 CLIP tokens
for prompt in (run_on, PROMPT):
    pooled_change, t5_change = solutions.change_from_extra_text(pipe.components, prompt, "and a gold star")
    clip_tokens = pe.truncation_report(prompt, pipe.tokenizer).prompt_tokens
    print(f"{clip_tokens:>3} CLIP tokens + extra text: pooled changes {'not at all' if pooled_change == 0 else 'yes'}, "
          f"T5 changes {'yes' if t5_change > 0 else 'no'}")
clip_prompt, t5_prompt = solutions.split_for_encoders(LONG_PROMPT, pipe.tokenizer)
print("CLIP gets:", repr(clip_prompt[:60] + " ..."), "| dropped:", repr(pe.check_prompt(clip_prompt, pipe.tokenizer)))
masked = [solutions.t5_states_with_mask(pipe.text_encoder_2, pipe.tokenizer_2, PROMPT, L) for L in (n_t5, 512)]
_ = kt.compare("masked T5, no pads vs 512", masked[0], masked[1])

# %% [markdown]
# ## References
# - diffusers `src/diffusers/pipelines/flux/pipeline_flux_kontext.py`: `FluxKontextPipeline.encode_prompt`,
#   `_get_clip_prompt_embeds`, `_get_t5_prompt_embeds` (the T5 truncation warning slices at
#   `self.tokenizer_max_length`), `check_inputs` (`max_sequence_length` ≤ 512)
# - diffusers `src/diffusers/models/transformers/transformer_flux.py`: `FluxPosEmbed`, the
#   `context_embedder`, and `time_text_embed` (pooled vector + timestep + guidance)
# - transformers `models/clip/modeling_clip.py`: `CLIPTextModel.forward` (causal mask,
#   `final_layer_norm`, the two pooling rules); `models/t5/modeling_t5.py`: `T5EncoderModel`
# - Black Forest Labs, `flux` repository: `src/flux/modules/conditioner.py` (`HFEmbedder`:
#   `padding="max_length"`, `attention_mask=None`, `pooler_output` for CLIP,
#   `last_hidden_state` for T5), `src/flux/sampling.py` (`prepare`: `txt_ids` zeros, `vec` = CLIP),
#   `src/flux/cli.py` (`load_t5(..., max_length=256 if schnell else 512)`)
# - Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*
#   (CLIP), 2021, arXiv:2103.00020
# - Raffel et al., *Exploring the Limits of Transfer Learning with a Unified Text-to-Text
#   Transformer* (T5), JMLR 2020, arXiv:1910.10683
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and
#   Editing in Latent Space*, 2025, arXiv:2506.15742
# - diffusers issue #9763: the CLIP truncation warning when training FLUX with long captions
