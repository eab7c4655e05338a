# %% [markdown]
# # 07 · The transformer forward: MMDiT blocks from scratch
#
# Inside the denoising loop, `FluxKontextPipeline` calls `pipe.transformer(...)` once per
# sigma: packed target and context tokens, the T5 sequence, the pooled CLIP vector, the
# timestep, the guidance value and the position ids go in, one velocity per image token comes
# out. This notebook rebuilds that call, `FluxTransformer2DModel.forward`, from plain
# `torch.nn` modules, loads the embedded model's weights into them and asserts that the whole
# model gives diffusers' numbers. Then it looks inside (attention maps) and measures the real
# 12 B model on the meta device (parameters, FLOPs, LoRA target names).
#
# ## What you will learn
# - build the conditioning vector `temb` (timestep + guidance + pooled CLIP) and show that
#   timestep and guidance reach the network **only** through AdaLN modulation
# - write a double-stream (MMDiT) block, a single-stream block and the output head from
#   scratch, and explain why FLUX has **no cross-attention** although it is often drawn with one
# - load a diffusers state dict into your own modules through an explicit name map and check
#   the whole model against `FluxTransformer2DModel` for many shapes
# - read attention maps: which text tokens and which context tokens a target token looks at
# - count the full model's parameters and the FLOPs of one 1024² Kontext step, split into
#   attention and MLP, and list the module names LoRA adapters target
#
# ## Prerequisites
# - `04_packing` (tokens of 64 features), `05_position_ids_rope` (ids and the RoPE tables,
#   used here as a ready part), `06_shift_schedule` (what the timestep is)
# - multi-head attention softmax(q·kᵀ/√d)·v, LayerNorm, residual connections; `torch.nn.Linear`

# %%
import kontext_teach as kt

device = kt.setup()

# %%
import inspect

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from diffusers.models.embeddings import get_timestep_embedding
from PIL import Image, ImageDraw

from kontext_teach.anatomy import full_size
from kontext_teach import transformer as T
from kontext_teach.anatomy import transformer_costs as costs
from kontext_teach.anatomy.attention_maps import (TokenLayout, attention_maps, attention_shares, plot_attention_maps,
                                          plot_joint_attention)
from kontext_teach.lab.harness import figure_png
from kontext_teach.position_ids import kontext_image_ids, latent_grid_ids, text_ids
from kontext_teach.rope import rope_tables

pipe = kt.load_pipeline()
reference = pipe.transformer  # diffusers' FluxTransformer2DModel: the embedded miniature
config = T.TransformerConfig.from_diffusers(reference.config)
full_config = T.TransformerConfig.from_diffusers(full_size.TRANSFORMER)
print("loaded    :", config)
print("full size :", full_config)
for label, c in (("loaded model", config), ("full size", full_config)):
    print(f"{label:<12}: dim = {c.num_heads} heads x {c.head_dim} = {c.dim}, "
          f"{c.num_double_blocks} double + {c.num_single_blocks} single blocks, RoPE axes {tuple(c.axes_dims_rope)}")

# %% [markdown]
# ## Theory
#
# **The whole network in one line.** With B samples, L<sub>t</sub> text tokens and
# L<sub>i</sub> image tokens (Kontext: target tokens, then context tokens):
#
# | step | diffusers module | shape |
# |---|---|---|
# | image tokens → width | `x_embedder` (64 → dim) | [B, L<sub>i</sub>, dim] |
# | T5 tokens → width | `context_embedder` (4096 → dim) | [B, L<sub>t</sub>, dim] |
# | t, guidance, pooled CLIP → **temb** | `time_text_embed` | [B, dim], one vector per sample |
# | 19 double-stream blocks | `transformer_blocks` | two streams, one joint attention |
# | 38 single-stream blocks | `single_transformer_blocks` | one sequence [text; image] |
# | output head on the image tokens | `norm_out`, `proj_out` (dim → 64) | [B, L<sub>i</sub>, 64] |
#
# dim = 24 heads × 128 = 3072 at full size (the loaded model's numbers are printed above). The pipeline keeps
# the first L<sub>target</sub> outputs: the context tokens get a "velocity" too, which is thrown away.
#
# **AdaLN-Zero: how temb steers a block** (DiT, Peebles & Xie 2023). A linear layer turns
# SiLU(temb) into a shift, a scale and a gate per sub-layer; the sub-layer f reads a
# modulated LayerNorm (no learned affine of its own) and is added back through the gate:
#
# x ← x + gate ⊙ f( LN(x) ⊙ (1 + scale) + shift )
#
# "Zero" is DiT's initialisation: the modulation starts at zero, so every gate is 0 and every
# block starts as the identity. temb has no token axis, and it is **not** a token in the
# sequence: the modulation linears (`norm1.linear`, `norm1_context.linear`, `norm.linear`,
# `norm_out.linear`) are its only way in. So the timestep, the guidance value (an input of the
# guidance-distilled dev models, not classifier-free guidance) and the pooled CLIP vector can
# only turn global knobs: scale and shift every channel, open or close every residual branch,
# the same for all tokens. Token-level text reaches the image through attention, from T5.
#
# **The double-stream (MMDiT) block** (SD3, Esser et al. 2024). Text and image tokens keep
# separate weights, everything per stream: modulation (`norm1_context` / `norm1`), q/k/v
# projections (`add_q/k/v_proj` / `to_q/k/v`), RMSNorms of q and k (`norm_added_q/k` /
# `norm_q/k`, per head, each stream with its own weights), output projections (`to_add_out` /
# `to_out.0`) and MLPs (`ff_context` / `ff`). But there is **one** attention: after each stream's
# q and k are RMS-normalised, the queries, keys and values of both streams are concatenated to
# [text; image], rotated by RoPE, and one softmax runs over all of them. Image tokens look at text tokens
# and at each other in the same softmax; text tokens look at the image, and the text stream
# leaves every block changed.
#
# **The single-stream block** (as in ViT-22B's parallel layers). After 19 double blocks the
# two streams become one sequence with one set of weights. Attention and MLP read the same
# modulated input side by side; `proj_out` maps their concatenation [attention; MLP hidden]
# (5·dim) back to dim, once per block.
#
# **The misreading.** A common description of FLUX's block is "LayerNorm, self-attention on the
# image latents, cross-attention with the text, MLP". That is the block of Stable Diffusion
# 1.x/2.x and of PixArt-α, and it is tempting here: the pipeline hands the text over as a
# separate input, diffusers calls it `encoder_hidden_states` (the name SD's cross-attention
# uses), and the attention module has `added_kv_proj_dim`, which reads like "extra keys and
# values for the text". In cross-attention the text is a fixed memory: it gives keys and
# values, never queries, and it is not updated. In FLUX the text has queries, is updated by
# all 57 blocks, and image–image and image–text scores compete in one softmax. The
# normalisation is modulated, not a plain LayerNorm, and there are QK RMSNorms and two
# block kinds.

# %%
fig = T.draw_block_diagram()
plt.show()

# %% [markdown]
# ## Practice
#
# ### 1. The whole machine, once
#
# The inputs of one Kontext call, made with the pipeline's public methods: `encode_prompt`
# (T5 sequence, pooled CLIP vector, `txt_ids`), the image processor, and `prepare_latents`
# (noise tokens, VAE-encoded context tokens and both id sets). The target is 128×128 px,
# 8×8 tokens; the condition image is 128 px wide and 96 px high, 6 rows × 8 columns of tokens.
# We keep 16 T5 tokens instead of 512 so that the attention pictures stay readable; nothing in
# the model depends on that number. The pipeline passes `timestep / 1000`, i.e. sigma (rounded in
# the model's dtype: it casts the timestep to that dtype before dividing, notebook 08).

# %%
def condition_picture(width: int, height: int) -> Image.Image:
    """A red disk on the left and a blue square on the right, on grey."""
    picture = Image.new("RGB", (width, height), (190, 190, 190))
    draw = ImageDraw.Draw(picture)
    draw.ellipse([0.1 * width, 0.25 * height, 0.45 * width, 0.75 * height], fill=(210, 40, 40))
    draw.rectangle([0.6 * width, 0.3 * height, 0.9 * width, 0.7 * height], fill=(40, 60, 200))
    return picture


prompt, num_text = "make the red circle blue", 16
target_px, context_px = (128, 128), (96, 128)  # (height, width)
target_grid, context_grid = (target_px[0] // 16, target_px[1] // 16), (context_px[0] // 16, context_px[1] // 16)

prompt_embeds, pooled, txt_ids = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=num_text)
condition = pipe.image_processor.preprocess(condition_picture(context_px[1], context_px[0]), *context_px)  # [1, 3, 96, 128]
noise, context, target_ids, context_ids = pipe.prepare_latents(
    condition, 1, 16, *target_px, torch.float32, device, torch.Generator().manual_seed(0))
inputs = dict(hidden_states=torch.cat([noise, context], dim=1),  # [target; context] tokens
              encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
              timestep=torch.tensor([0.8]), guidance=torch.tensor([2.5]),
              img_ids=torch.cat([target_ids, context_ids]), txt_ids=txt_ids)
for name, value in inputs.items():
    print(f"{name:<22} {str(tuple(value.shape)):<14} {value.dtype}")

with torch.no_grad():
    velocity_diffusers = reference(**inputs, return_dict=False)[0]
print("velocity", tuple(velocity_diffusers.shape), "-> the pipeline keeps the first", noise.shape[1], "tokens")

# %% [markdown]
# The condition image with its token grid: each cell of 16×16 px becomes one context token.

# %%
fig, ax = plt.subplots(figsize=(4, 3))
ax.imshow(condition_picture(context_px[1], context_px[0]))
ax.set_xticks([x - 0.5 for x in range(0, context_px[1] + 1, 16)])
ax.set_yticks([y - 0.5 for y in range(0, context_px[0] + 1, 16)])
ax.set_xticklabels([]), ax.set_yticklabels([])
ax.grid(color="white", lw=0.8)
ax.set_title(f"condition image: {context_grid[0]}×{context_grid[1]} context tokens", fontsize=10)
plt.show()

# %% [markdown]
# ### 2. The conditioning vector temb
#
# The timestep (sigma × 1000, so 0..1000) first becomes 256 sinusoidal features: cos and sin
# of t·f<sub>j</sub> with 128 frequencies f<sub>j</sub> = 10000<sup>−j/128</sup>, from 1 down to
# 1/10000. Low channels turn fast and tell nearby timesteps apart, high channels turn slowly and
# say roughly where on 0..1000 the value is. The guidance value (× 1000) goes through the same
# function. The picture is the same for every FLUX model: it has no weights.

# %%
t = torch.linspace(0, 1000, 101)
features = T.timestep_embedding(t)  # [101, 256]
kt.compare("timestep_embedding", features, get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0),
           atol=1e-6)

fig, ax = plt.subplots(figsize=(8, 3))
image = ax.imshow(features.T, aspect="auto", cmap="RdBu", extent=[0, 1000, 255.5, -0.5], interpolation="nearest")
ax.axvline(800, color="black", ls="--", lw=1)
ax.set_xlabel("timestep t = sigma × 1000 (dashed: our call, sigma 0.8)")
ax.set_ylabel("feature (0-127 cos, 128-255 sin)")
plt.colorbar(image, ax=ax)
plt.show()

# %% [markdown]
# Three small MLPs (Linear → SiLU → Linear) lift t, the guidance value and the pooled CLIP vector
# to the model width, and the three results are **summed**. Our `Conditioning` gets the weights
# of diffusers' `CombinedTimestepGuidanceTextProjEmbeddings` through its name map.

# %%
print(inspect.getsource(T.Conditioning.forward))
conditioning = T.Conditioning(config)
T.load_diffusers_weights(conditioning, reference.time_text_embed.state_dict())
for ours_name, theirs_name in conditioning.diffusers_names().items():
    if ours_name.endswith(".weight"):
        print(f"  {ours_name:<26} <- time_text_embed.{theirs_name}")

timestep_1000, guidance_1000 = inputs["timestep"] * 1000, inputs["guidance"] * 1000  # the model multiplies by 1000
with torch.no_grad():
    temb = conditioning(timestep_1000, guidance_1000, pooled)  # [1, dim]
    temb_diffusers = reference.time_text_embed(timestep_1000, guidance_1000, pooled)
_ = kt.compare("temb", temb, temb_diffusers)

# %% [markdown]
# ### 3. AdaLN modulation: the only door for temb
#
# `AdaLNModulation` is SiLU → one Linear → chunks. A double block has two of them (image and
# text), each giving 6 vectors: (shift, scale, gate) for the attention and for the MLP. A
# single block has one giving 3. Check against diffusers' `AdaLayerNormZero` (`norm1` of the
# first block), which returns the modulated LayerNorm and the remaining vectors.

# %%
print(inspect.getsource(T.AdaLNModulation.forward))
modulation = T.AdaLNModulation(config.dim, 2)
T.load_diffusers_weights(modulation, reference.transformer_blocks[0].norm1.state_dict(),
                         {"lin.weight": "linear.weight", "lin.bias": "linear.bias"})
with torch.no_grad():
    img_tokens = reference.x_embedder(inputs["hidden_states"])  # [1, 112, dim]
    attn_mod, mlp_mod = modulation(temb)
    normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = reference.transformer_blocks[0].norm1(img_tokens, emb=temb)
print("modulation vectors:", {k: tuple(v.shape) for k, v in vars(attn_mod).items()}, "(x2: attention and MLP)")
kt.compare("LN(x)·(1+scale)+shift", T.modulate(T.layer_norm(img_tokens), attn_mod.shift, attn_mod.scale), normed)
kt.compare("attention gate", attn_mod.gate, gate_msa)
_ = kt.compare("MLP shift, scale, gate", torch.cat([mlp_mod.shift, mlp_mod.scale, mlp_mod.gate]),
               torch.cat([shift_mlp, scale_mlp, gate_mlp]))

# %% [markdown]
# ### 4. The double-stream block
#
# Read the forward from top to bottom: modulate and project per stream, concatenate, rotate,
# **one** attention, split, gated residuals, per-stream MLPs. `attention()` computes the
# probabilities explicitly (instead of a fused kernel) so we can look at them later.

# %%
print(inspect.getsource(T.DoubleStreamBlock.forward))

# %% [markdown]
# Our names and diffusers' names, side by side (`.weight` shown; each Linear has a `.bias` too):

# %%
for ours_name, theirs_name in T.DoubleStreamBlock.diffusers_names().items():
    if ours_name.endswith(".weight"):
        print(f"  {ours_name:<22} <- {theirs_name}")

# %% [markdown]
# Check one block on the real inputs of the first block: the embedded tokens, temb and the RoPE
# tables (`rope_tables`, built in `05_position_ids_rope` and equal to diffusers' `FluxPosEmbed`).
# Both outputs, image and **text**, must match: the text stream is changed by the block.

# %%
with torch.no_grad():
    txt_tokens = reference.context_embedder(prompt_embeds)  # [1, 16, dim]
    rope = rope_tables(torch.cat([txt_ids, inputs["img_ids"]]), config.axes_dims_rope)  # 2 x [128, head_dim]
    double_block = T.DoubleStreamBlock(config)
    T.load_diffusers_weights(double_block, reference.transformer_blocks[0].state_dict())
    img_out, txt_out, block_probs = double_block(img_tokens, txt_tokens, temb, rope)
    txt_ref, img_ref = reference.transformer_blocks[0](hidden_states=img_tokens, encoder_hidden_states=txt_tokens,
                                                       temb=temb, image_rotary_emb=rope)
kt.compare("double block: image", img_out, img_ref)
kt.compare("double block: text", txt_out, txt_ref)
print("text stream changed by the block:", not torch.equal(txt_out, txt_tokens))

# %% [markdown]
# The attention matrix of this block, all 128 × 128 probabilities (mean over heads). Rows are
# queries, columns keys, in the order [text; target; context]. Cross-attention would fill only
# the image-rows × text-columns block, with image self-attention elsewhere and no text rows at
# all; here every block of the matrix is in use, and every row sums to 1 over all three kinds.

# %%
layout = TokenLayout(num_text=num_text, target_grid=target_grid, context_grid=context_grid)
ax = plot_joint_attention(block_probs, layout)
ax.set_title("double block 0: one softmax over [text; target; context]", fontsize=10)
plt.show()
print("row sums:", round(block_probs.sum(-1).min().item(), 4), "to", round(block_probs.sum(-1).max().item(), 4))

# %% [markdown]
# ### 5. The single-stream block
#
# One sequence, one set of weights for text and image, attention and MLP in parallel.

# %%
print(inspect.getsource(T.SingleStreamBlock.forward))
single_block = T.SingleStreamBlock(config)
T.load_diffusers_weights(single_block, reference.single_transformer_blocks[0].state_dict())
for ours_name, theirs_name in T.SingleStreamBlock.diffusers_names().items():
    if ours_name.endswith(".weight"):
        print(f"  {ours_name:<14} <- {theirs_name}")
with torch.no_grad():
    x_out, _ = single_block(torch.cat([txt_out, img_out], dim=1), temb, rope)
    txt_ref, img_ref = reference.single_transformer_blocks[0](hidden_states=img_out, encoder_hidden_states=txt_out,
                                                              temb=temb, image_rotary_emb=rope)
_ = kt.compare("single block [text; image]", x_out, torch.cat([txt_ref, img_ref], dim=1))

# %% [markdown]
# ### 6. The output head
#
# After the last single block the text tokens are dropped. `norm_out` is diffusers'
# `AdaLayerNormContinuous`: one Linear from SiLU(temb) to 2·dim, chunked as **(scale, shift)**.
# Black Forest Labs' `LastLayer` chunks the same Linear as (shift, scale), so converting a
# checkpoint between the two formats swaps the two halves (exercise 1). `proj_out` maps dim → 64.

# %%
print(inspect.getsource(T.FinalLayer.modulated_norm))
final = T.FinalLayer(config)
state = reference.state_dict()
T.load_diffusers_weights(final, {theirs: state[theirs] for theirs in T.FinalLayer.diffusers_names().values()})
image_part = x_out[:, num_text:]  # [1, 112, dim]
with torch.no_grad():
    kt.compare("norm_out (scale, shift)", final.modulated_norm(image_part, temb), reference.norm_out(image_part, temb))
    _ = kt.compare("proj_out", final(image_part, temb), reference.proj_out(reference.norm_out(image_part, temb)))

# %% [markdown]
# ### 7. The whole model
#
# `KontextTransformer.from_diffusers` reads the config, builds the modules and copies every
# parameter through the name map; a missing, left-over or misshapen key stops it with a
# message. Then the check that matters: **the whole model's output** against
# `FluxTransformer2DModel`, for the edit above and for other shapes: non-square grids, no
# context image (plain text-to-image), batches, timesteps and guidance values.

# %%
ours = T.KontextTransformer.from_diffusers(reference)
names = ours.diffusers_names()
print(len(names), "parameters mapped, e.g.")
for key in ["img_in.weight", "conditioning.pooled_in.fc1.weight",
            f"double_blocks.{config.num_double_blocks - 1}.txt_attn.q.weight", "single_blocks.0.mlp_in.weight",
            "final.mod.weight"]:
    print(f"  {key:<36} <- {names[key]}")

with torch.no_grad():
    velocity = ours(**inputs)
kt.compare("whole model: our edit", velocity, velocity_diffusers)


def random_inputs(batch, num_text, target_grid, context_grid, timestep, guidance, seed=0):
    """Random tokens of the right shapes, the ids of a Kontext (or text-to-image) call."""
    generator = torch.Generator().manual_seed(seed)
    ids = latent_grid_ids(*target_grid) if context_grid is None else kontext_image_ids(target_grid, context_grid)
    return dict(hidden_states=torch.randn(batch, ids.shape[0], config.in_channels, generator=generator),
                encoder_hidden_states=torch.randn(batch, num_text, config.text_dim, generator=generator),
                pooled_projections=torch.randn(batch, config.pooled_dim, generator=generator),
                timestep=torch.full([batch], timestep), guidance=torch.full([batch], guidance),
                img_ids=ids, txt_ids=text_ids(num_text))


cases = [  # (batch, text tokens, target grid, context grid, sigma, guidance)
    (1, 512, (4, 4), (4, 4), 1.0, 2.5),
    (2, 7, (3, 5), (5, 2), 0.5, 3.5),
    (3, 4, (2, 6), None, 0.05, 1.0),
    (1, 10, (7, 3), (3, 7), 0.33, 2.5),
]
for batch, n_text, t_grid, c_grid, sigma, guidance in cases:
    case_inputs = random_inputs(batch, n_text, t_grid, c_grid, sigma, guidance)
    with torch.no_grad():
        ours_out, theirs_out = ours(**case_inputs), reference(**case_inputs, return_dict=False)[0]
    _ = kt.compare(f"B{batch} T{n_text} {t_grid}+{c_grid}", ours_out, theirs_out)

# %% [markdown]
# A state dict that does not fit is refused with a message that says what to do, here one
# saved with fused QKV projections (`transformer.fuse_qkv_projections()` renames keys):

# %%
fused = dict(reference.state_dict())
fused["transformer_blocks.0.attn.to_qkv.weight"] = torch.cat([fused.pop(f"transformer_blocks.0.attn.to_{x}.weight")
                                                             for x in "qkv"])
try:
    T.load_diffusers_weights(T.KontextTransformer(config), fused)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# **Timestep and guidance enter only through modulation: the proof.** Zero the weight of every
# AdaLN Linear (keep the biases). If temb had any other path into the network, changing the
# timestep or the guidance value would still change the output. It does not change by a single
# bit, while the intact model's output changes.

# %%
frozen = T.KontextTransformer.from_diffusers(reference)
with torch.no_grad():
    for linear in T.modulation_linears(frozen):  # norm1(_context).linear, norm.linear, norm_out.linear
        linear.weight.zero_()
    early, late = (dict(inputs, timestep=torch.tensor([s]), guidance=torch.tensor([g])) for s, g in ((0.9, 1.0),
                                                                                                      (0.1, 4.0)))
    print("AdaLN weights zeroed: output identical for (sigma 0.9, g 1.0) and (sigma 0.1, g 4.0):",
          torch.equal(frozen(**early), frozen(**late)))
    print("intact model:         output identical:", torch.equal(ours(**early), ours(**late)))

# %% [markdown]
# ### 8. Attention maps
#
# With `return_attention=True` our model also returns the attention probabilities of every
# block, [B, heads, L, L] over [text; target; context]. For one **target** token (a row of the
# matrix) `attention_maps` splits its row into the text tokens (bars, with the T5 pieces as
# labels; padding tokens take part, FLUX passes no attention mask), the target grid and the
# context grid (heat maps); the red square marks the query's own (row, col). The miniature was
# trained on the toy world's flat shapes only (appendix A1), and this picture and prompt are not
# from that world, so read the maps as a way to inspect the mechanism: they show where this small
# model looks, not where FLUX.1-Kontext-dev would.

# %%
with torch.no_grad():
    velocity, probs = ours(**inputs, return_attention=True)
block_names = [f"double {i}" for i in range(config.num_double_blocks)] + [
    f"single {i}" for i in range(config.num_single_blocks)]
t5_ids = pipe.tokenizer_2(prompt, padding="max_length", max_length=num_text, truncation=True).input_ids
token_labels = pipe.tokenizer_2.convert_ids_to_tokens(t5_ids)
print(len(probs), "blocks, each", tuple(probs[0].shape), "| text tokens:", token_labels[:8], "...")

maps = attention_maps(probs[0], layout, row=3, col=2)  # mean over heads
print("attention of target token (3, 2) sums to", round(sum(m.sum().item() for m in maps.values()), 4))
plot_attention_maps(maps, 3, 2, token_labels, title="double block 0, mean over heads, target token (row 3, col 2)")
plt.show()

# %% [markdown]
# Averaged over all target tokens: the share of attention each head gives to text, target and
# context tokens, block by block (attention mass, not importance: values can differ in size).

# %%
fig, axes = plt.subplots(1, len(probs), figsize=(3 * len(probs), 2.6), sharey=True)
colours = {"text": "#e08214", "target": "#4575b4", "context": "#91bfdb"}
for ax, block_probs_i, name in zip(axes, probs, block_names):
    shares = attention_shares(block_probs_i, layout)  # {kind: [heads]}
    bottom = torch.zeros(config.num_heads)
    for kind, share in shares.items():
        ax.bar(range(config.num_heads), share, bottom=bottom, color=colours[kind], label=kind)
        bottom += share
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("head")
axes[0].set_ylabel("share of a target\ntoken's attention")
axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
plt.tight_layout()
plt.show()

# %% [markdown]
# Explore: choose a block, a head (or the mean) and a target token.

# %%
def attention_figure(block: int = 0, head="mean", row: int = 3, col: int = 2):
    """attention_maps() of one block, head and target token, drawn (a thin wrapper for the widget)."""
    head_index = None if head == "mean" else int(head)
    chosen = attention_maps(probs[block], layout, row, col, head=head_index)
    axes = plot_attention_maps(chosen, row, col, token_labels, title=f"{block_names[block]}, head {head}, "
                                                                       f"target token (row {row}, col {col})")
    return axes[0].figure


attention_figure(block=min(2, len(probs) - 1), head=min(1, config.num_heads - 1), row=5, col=6)
plt.show()

# %%
attention_picture = widgets.Image(format="png")  # the figure goes into the widget, not into the cell's output


def show_attention_in_widget(block, head, row, col):
    attention_picture.value = figure_png(attention_figure(block, head, row, col))


controls = widgets.interactive(show_attention_in_widget, block=widgets.IntSlider(0, 0, len(probs) - 1),
                               head=["mean"] + list(range(config.num_heads)),
                               row=widgets.IntSlider(3, 0, target_grid[0] - 1),
                               col=widgets.IntSlider(2, 0, target_grid[1] - 1))
widgets.VBox([controls, attention_picture])

# %% [markdown]
# ### 9. The real model, measured on the meta device
#
# `full_size.meta_components()` builds FLUX.1-Kontext-dev's transformer on PyTorch's meta
# device: every parameter has a shape, none has memory. Our from-scratch model can be built
# there too, and the name map must fit it exactly.

# %%
full = full_size.meta_components()["transformer"]
total = full_size.count_parameters(full)
print(f"FluxTransformer2DModel: {total:,} parameters")
assert total == 11_901_408_320
with torch.device("meta"):
    ours_full = T.KontextTransformer(full_config)
T.load_diffusers_weights(ours_full, full.state_dict())  # every name and every shape fits
print(f"our KontextTransformer: {sum(p.numel() for p in ours_full.parameters()):,} parameters, names and shapes fit")

print("\nper module:")
for name, count in costs.parameters_per_module(full).items():
    print(f"  {name:<27} {count:>15,}  {count / total:6.1%}")
for kind, count in (("transformer_blocks", full_config.num_double_blocks),
                    ("single_transformer_blocks", full_config.num_single_blocks)):
    parts = costs.parameters_per_block_part(getattr(full, kind)[0])
    print(f"\none of the {count} {kind}: {sum(parts.values()):,}")
    for name, n in parts.items():
        if n > 1000:  # the QK RMSNorms have 128 weights each
            print(f"  {name:<27} {n:>15,}")

# %% [markdown]
# **FLOPs of one step.** Every Linear on n tokens costs 2·n·in·out FLOPs (a multiply and an
# add per weight per token); attention costs 2·L²·dim for q·kᵀ and as much again for
# probabilities·v, over the joint length L. The modulation Linears run once per sample, not per
# token. `step_flops` adds it up, matmuls only (norms, softmax, GELU, RoPE are a few FLOPs per
# value and left out). A 1024² Kontext edit has 4096 target + 4096 context + 512 text = 8704
# tokens. The check: `torch.utils.flop_counter` counting diffusers' own model on the meta device
# (where attention decomposes into counted matmuls) must give the same number, to the FLOP.

# %%
kontext_1024 = costs.step_flops(full_config, num_text=512, num_image=4096 + 4096)
kontext_tokens = {"hidden_states": (1, 8192, 64), "encoder_hidden_states": (1, 512, 4096), "pooled_projections": (1, 768)}
with torch.device("meta"):
    meta_inputs = {name: torch.empty(shape) for name, shape in kontext_tokens.items()}
    meta_inputs.update(timestep=torch.ones(1), guidance=torch.ones(1))
meta_inputs.update(img_ids=kontext_image_ids((64, 64), (64, 64)).to("meta"), txt_ids=text_ids(512).to("meta"))
measured = costs.measured_flops(full, meta_inputs)
print(f"formula {costs.total_flops(kontext_1024):,} FLOPs | FlopCounterMode on diffusers' model {measured:,}")
assert measured == costs.total_flops(kontext_1024)

for part, categories in kontext_1024.items():
    print(f"\n{part}: {sum(categories.values()) / 1e12:.1f} TFLOPs")
    for category, flops in categories.items():
        print(f"  {category:<24} {flops / 1e12:7.2f} TFLOPs  {flops / costs.total_flops(kontext_1024):6.1%}")

# %% [markdown]
# The same count for three settings. Kontext's context image doubles the image tokens: every
# Linear costs about 1.9× (8704 / 4608 tokens), attention about 3.6× (the square of that).

# %%
settings = {
    "text-to-image 1024²": costs.step_flops(full_config, 512, 4096),
    "Kontext 512²": costs.step_flops(full_config, 512, 1024 + 1024),
    "Kontext 1024²": kontext_1024,
}
costs.plot_flops(settings)
plt.show()
for name, breakdown in settings.items():
    share = costs.flops_by_category(breakdown)["attention (QKᵀ, AV)"] / costs.total_flops(breakdown)
    print(f"{name:<20} {costs.total_flops(breakdown) / 1e12:6.1f} TFLOPs, attention {share:.0%}")

# %% [markdown]
# **Parameters are not FLOPs.** The AdaLN modulation Linears hold more than a quarter of the
# weights but run once per sample, so they cost almost nothing; attention itself has no weights
# but takes a third of the compute at 1024². For scale: the README reports 0.46 s for one
# inference forward at 1024² in bf16 on one H200 (random weights, torch 2.11, diffusers 0.42.1);
# the rate that implies is printed below.

# %%
costs.plot_parameters_vs_flops(costs.parameters_by_category(full), costs.flops_by_category(kontext_1024))
plt.show()
H200_FORWARD_S = 0.46  # README: one 1024² Kontext forward, bf16, one H200
print(f"{costs.total_flops(kontext_1024) / 1e12:.0f} TFLOPs / {H200_FORWARD_S} s = "
      f"{costs.total_flops(kontext_1024) / H200_FORWARD_S / 1e12:.0f} TFLOP/s")
for category, count in costs.parameters_by_category(full).items():
    print(f"{category:<24} {count:>15,} parameters")

# %% [markdown]
# **The names LoRA targets.** A LoRA adapter wraps `nn.Linear` layers chosen by name; in the
# diffusers model those are the Linears inside the blocks. Walking the module names of the
# meta model (block index removed) lists them. PEFT matches a target string against the end of
# a module name, so `attn.to_q` hits 57 layers (19 double + 38 single blocks); exercise 2 finds
# a target that hits one layer more than intended.

# %%
for kind, linear_names in costs.block_linear_names(full).items():
    print(f"{kind}: {', '.join(linear_names)}")
print("attn.to_q layers:", sum(name.endswith(".attn.to_q") for name, _ in full.named_modules()))

# %% [markdown]
# ## Summary
# - `temb` = MLP(sin-cos(t)) + MLP(sin-cos(guidance)) + MLP(pooled CLIP): one vector per
#   sample. It enters only through AdaLN modulation (shift, scale, gate); with those weights
#   zeroed, timestep and guidance have no effect at all.
# - A double-stream block has separate weights per stream but **one joint attention** over
#   [text; image]; q and k are RMS-normalised per stream before the concatenation, then rotated
#   by RoPE; the text stream is updated too. There is no
#   cross-attention anywhere in FLUX.
# - A single-stream block runs attention and MLP in parallel on one sequence and merges them in
#   one `proj_out`; the head `norm_out` chunks (scale, shift), BFL's (shift, scale).
# - Our from-scratch `KontextTransformer` loads diffusers weights through an explicit name map
#   and matches `FluxTransformer2DModel` in fp32 for every shape we tried, within `kt.compare`'s
#   tolerance (the largest differences are printed in §7).
# - One 1024² Kontext step is about 165 TFLOPs: MLP ≈ 45 %, attention ≈ 32 %, projections ≈ 23 %;
#   modulation holds 27 % of the 11.9 B parameters but almost no FLOPs.
# - LoRA targets are the blocks' Linears: `attn.to_q/k/v`, `attn.to_out.0`, `attn.add_*_proj`,
#   `attn.to_add_out`, `ff*.net.*`, `norm1*.linear` in double blocks; `attn.to_q/k/v`,
#   `proj_mlp`, `proj_out`, `norm.linear` in single blocks.

# %% [markdown]
# ## Exercises
# 1. **Checkpoint formats.** BFL's `final_layer.adaLN_modulation.1` computes
#    `shift, scale = chunk(Linear(SiLU(temb)), 2)` and `(1 + scale) · LN(x) + shift`. Write
#    `norm_out_to_bfl(weight, bias)` that turns diffusers' `norm_out.linear` into that layout and
#    `bfl_final_norm(x, temb, weight, bias)`, and check that the two agree with `reference.norm_out`.
#    What goes wrong, and how visibly, if a converter forgets the swap?
# 2. **LoRA size.** Write `lora_parameter_count(model, target_modules, rank)`: rank·(in + out)
#    for every `nn.Linear` whose name equals a target or ends with "." + target (PEFT's rule).
#    How many parameters does rank 16 on `["attn.to_q", "attn.to_k", "attn.to_v",
#    "attn.to_out.0"]` train at full size? Which extra layer does the target `"proj_out"` catch?
#    Check your count with `peft.inject_adapter_in_model` on the miniature.
# 3. **What the context image costs.** Write `context_flops_ratio(config, height, width)`: the
#    FLOPs of one Kontext call (condition image of the same size) divided by those of a
#    text-to-image call. Why does it grow with the resolution, and between which two bounds
#    does it stay? Check it against `FlopCounterMode` on the miniature (on the meta device).
#
# Solutions: `kontext_teach/solutions/s07_transformer_forward.py`, checked by
# `tests/test_solutions_07.py`.

# %%
from kontext_teach.solutions import s07_transformer_forward as solutions

weight, bias = solutions.norm_out_to_bfl(reference.norm_out.linear.weight, reference.norm_out.linear.bias)
with torch.no_grad():
    _ = kt.compare("BFL final norm", solutions.bfl_final_norm(image_part, temb, weight, bias),
                   reference.norm_out(image_part, temb))
r16 = solutions.lora_parameter_count(full, ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"], rank=16)
print(f"rank-16 LoRA on q/k/v/out at full size: {r16:,} parameters ({r16 / total:.2%} of the model)")
print(f"Kontext / text-to-image FLOPs at 1024²: {solutions.context_flops_ratio(full_config, 1024, 1024):.2f}")

# %% [markdown]
# ## References
# - diffusers `src/diffusers/models/transformers/transformer_flux.py`: `FluxTransformer2DModel`,
#   `FluxTransformerBlock`, `FluxSingleTransformerBlock`, `FluxAttention`, `FluxAttnProcessor`,
#   `FluxPosEmbed`
# - diffusers `src/diffusers/models/embeddings.py`: `get_timestep_embedding`, `Timesteps`,
#   `TimestepEmbedding`, `PixArtAlphaTextProjection`, `CombinedTimestepGuidanceTextProjEmbeddings`,
#   `apply_rotary_emb`; `normalization.py`: `AdaLayerNormZero`, `AdaLayerNormZeroSingle`,
#   `AdaLayerNormContinuous`; `attention.py`: `FeedForward`
# - diffusers `src/diffusers/pipelines/flux/pipeline_flux_kontext.py`: `FluxKontextPipeline`
#   (`encode_prompt`, `prepare_latents`, the call `self.transformer(..., timestep=timestep / 1000)`)
# - Black Forest Labs, `black-forest-labs/flux`: `src/flux/model.py` (`Flux`), `src/flux/modules/layers.py`
#   (`DoubleStreamBlock`, `SingleStreamBlock`, `LastLayer`, `Modulation`, `QKNorm`, `timestep_embedding`)
# - Esser et al., *Scaling Rectified Flow Transformers for High-Resolution Image Synthesis*
#   (SD3, MMDiT), 2024, arXiv:2403.03206
# - Peebles & Xie, *Scalable Diffusion Models with Transformers* (DiT, adaLN-Zero), 2023,
#   arXiv:2212.09748
# - Dehghani et al., *Scaling Vision Transformers to 22 Billion Parameters* (parallel attention
#   and MLP layers, QK normalisation), 2023, arXiv:2302.05442
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing
#   in Latent Space*, 2025, arXiv:2506.15742
# - PyTorch `torch.utils.flop_counter.FlopCounterMode`; PEFT `LoraConfig(target_modules=...)`
# - Karpathy, nanoGPT `model.py` (`from_pretrained`: loading foreign weights by an explicit name map)
