# %% [markdown]
# # 04 · Packing: from a latent image to a sequence of tokens
#
# The VAE (`03_vae_latents`) turns a picture into a small 16-channel image, the latent
# [B, 16, H/8, W/8]. The transformer reads sequences. `FluxKontextPipeline.prepare_latents`
# bridges the two by **packing**: it cuts the latent into 2×2 patches and lays each patch out
# as one token of 16 × 4 = 64 numbers. It does this twice per edit, for the noise that becomes
# the output and for the condition image; after the last step, **unpacking** turns the tokens
# back into a latent for the VAE decoder. This notebook rebuilds both, pictures them patch by
# patch, and counts what they produce: how many tokens each size gives, and what attention
# over those tokens costs.
#
# ## What you will learn
# - pack a latent into tokens with `reshape → permute → reshape`, and say for any latent value
#   which token and which feature it lands in: feature = 4·c + 2·ph + pw
# - unpack as the exact inverse, and check both, to the bit, against the pipeline
#   (`prepare_latents` and its decode path)
# - relate packing to `torch.nn.functional.pixel_unshuffle` and to a 2×2 stride-2 convolution,
#   and recognise the tempting wrong feature order
# - count the tokens of the 17 preferred Kontext resolutions and estimate what attention over
#   [text; target; context] costs, and what share of the compute it is
# - read the errors: why image sides are multiples of 16, what `latents=` expects
#
# ## Prerequisites
# - `03_vae_latents`: a condition image becomes a scaled latent [B, 16, H/8, W/8]
# - `01_image_preprocessing`: the 17 preferred resolutions and the output size rules
# - PyTorch `reshape` / `permute`, and attention as softmax(QKᵀ/√d)·V over a sequence

# %%
import kontext_teach as kt

device = kt.setup()

# %%
import html

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
from PIL import Image

from kontext_teach.anatomy import full_size
from kontext_teach.anatomy.sequence_costs import (describe_resolution, draw_flops, draw_sequence_costs,
                                                  edit_sequence, format_resolution_table,
                                                  preferred_resolution_table)
from kontext_teach.packing import (draw_feature_maps, draw_packing, latent_size, pack_latents,
                                   pack_with_pixel_unshuffle, patch_embed_as_conv, token_feature_sources,
                                   unpack_latents)
from kontext_teach.preprocessing import observe_pipeline_sizes, output_size

pipe = kt.load_pipeline()
print("latent channels", pipe.vae.config.latent_channels, "| transformer in_channels",
      pipe.transformer.config.in_channels, "| full size in_channels", full_size.TRANSFORMER["in_channels"])

# %% [markdown]
# ## Theory
#
# **What packing does.** Take a latent with C channels, h rows and w columns (C = 16, h = H/8,
# w = W/8). Cut it into 2×2 patches: (h/2)·(w/2) of them. Each patch holds 4 pixels × C
# channels = 4C numbers, and becomes one token. Tokens are read over the patch grid row by row,
# like text. A 1024×1024 image has a 128×128 latent and becomes 64 × 64 = **4096 tokens of 64
# features**: one token per 16×16 image pixels (8 for the VAE × 2 for the patch).
#
# **Where every number goes.** Write a latent value's position as (c, y, x), and its place inside
# its patch as ph = y mod 2 (patch row), pw = x mod 2 (patch column). Then
#
# token t = (y // 2) · (w/2) + (x // 2)  feature f = 4·c + 2·ph + pw
#
# so the 64 features of a token are ordered **(c, ph, pw)**: first the four pixels of channel 0,
# then the four of channel 1, and so on. In code, three moves and no arithmetic
# (diffusers `FluxKontextPipeline._pack_latents`; BFL `einops.rearrange(img,
# "b c (h ph) (w pw) -> b (h w) (c ph pw)")` in `src/flux/sampling.py`):
#
# | step | shape |
# |---|---|
# | `reshape(B, C, h/2, 2, w/2, 2)`: split each side into (patch index, place in patch) | [B, C, h/2, ph, w/2, pw] |
# | `permute(0, 2, 4, 1, 3, 5)`: patch grid first, then (c, ph, pw) | [B, h/2, w/2, C, ph, pw] |
# | `reshape(B, (h/2)(w/2), 4C)`: flatten grid → tokens, (c, ph, pw) → features | [B, L, 4C] |
#
# (diffusers writes the first step as `view`; `reshape` does the same and also accepts
# non-contiguous input.) Unpacking runs the same three moves backwards. Both are **permutations**: no value is added,
# scaled or mixed, so unpack(pack(x)) is x bit for bit.
#
# **Why 2×2.** Attention scores every pair of tokens. Packing 2×2 makes the sequence 4× shorter
# and the number of pairs 16× smaller, at no loss: all values are kept, only regrouped. The
# learning happens right after: `x_embedder`, a Linear 64 → 3072, mixes each token's 64 numbers.
# Packing followed by that Linear is exactly a 2×2 convolution with stride 2, the "patchify"
# layer of ViT and DiT, with patch size 2 as in DiT's best models and in SD3.
#
# **Common misreadings.**
# - *"Packing is a learned patch embedding."* No: it has no parameters. The learned part is
#   `x_embedder`, the next layer.
# - *"A token's features are its 4 pixels, each with its 16 channels"*, order (ph, pw, c), as a
#   channels-last mind would lay them out. Same numbers, wrong places: `x_embedder` was trained on
#   (c, ph, pw), and every column of its weight expects one particular (c, ph, pw).
# - *"`pipe(latents=...)` takes [B, 16, h, w] noise."* It takes **packed** tokens [B, L, 64] and
#   passes them on untouched; only noise it draws itself, and a 16-channel `image`, get packed.

# %% [markdown]
# ## Practice
# ### 1. Pack by hand, on a latent you can read
#
# A latent with 2 channels and 4×6 pixels whose values spell their own position: 100·c + 10·y + x.
# Value 113 is channel 1, row 1, column 3.

# %%
channels, height, width = 2, 4, 6
c, y, x = torch.meshgrid(torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij")
readable = (100 * c + 10 * y + x)[None]  # [1, 2, 4, 6]
print(readable[0])

# %% [markdown]
# The three moves, with the shape after each:

# %%
patches = readable.reshape(1, channels, height // 2, 2, width // 2, 2)  # [B, C, h/2, ph, w/2, pw]
print("split into patches    ", tuple(patches.shape))
patches = patches.permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, ph, pw]
print("patch grid first      ", tuple(patches.shape))
tokens = patches.reshape(1, (height // 2) * (width // 2), channels * 4)  # [B, L, 4C]
print("tokens x features     ", tuple(tokens.shape))
for t, features in enumerate(tokens[0].tolist()):
    print(f"token {t} (patch {divmod(t, width // 2)}):", " ".join(f"{v:03d}" for v in features))
print("pack_latents gives the same:", torch.equal(pack_latents(readable), tokens))

# %% [markdown]
# Read token 0: `000 001 010 011` are channel 0's four pixels (0,0) (0,1) (1,0) (1,1), then
# `100 101 110 111` are channel 1's. Token 1 is the next patch to the right (columns 2–3), and
# token 3 starts the second row of patches.
#
# ### 2. The picture, patch by patch
#
# The same for a latent with the real 16 channels, computed by `token_feature_sources`, which
# packs three grids of indices (c, y, x) instead of values. Left: one channel of a 4×6 latent
# cut into patches; token t4's four pixels are coloured. Bottom: the sequence the transformer
# reads. Right: t4's 64 features, one row per channel, one column per pixel of the patch.

# %%
fig = draw_packing(channels=16, latent_height=4, latent_width=6, token=4)
plt.show()

# %%
sources = token_feature_sources(16, 4, 6)  # [L, 64, 3]: (c, y, x) behind every feature
print("token 4, features 0-5 come from (c, y, x):", [tuple(s) for s in sources[4, :6].tolist()])
print("feature 37 of token 4 comes from", tuple(sources[4, 37].tolist()), "= 4*9 + 2*0 + 1")

# %% [markdown]
# Every feature is one channel at one offset of the patch. Seen over all tokens at once, a
# feature is an image on the token grid: the channel sampled at one of the four offsets. A
# synthetic RGB picture (3 channels, so 12 features) makes this visible. Its blue channel has a
# one-pixel checkerboard on its right half: there the four offsets see black, white, white, black.

# %%
rows, cols = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
checker = ((torch.arange(32)[:, None] + torch.arange(48)) % 2).float()
picture = torch.stack([rows,  # red: a vertical ramp
                       (((rows - 0.5) ** 2 + (cols - 0.5) ** 2) < 0.09).float(),  # green: a disc
                       torch.where(cols > 0.5, checker, 0.5)])  # blue: grey | checkerboard
fig = draw_feature_maps(picture, ["red", "green", "blue"])
plt.show()

# %% [markdown]
# ### 3. Check against diffusers
#
# `prepare_latents` is the pipeline's public step that packs. Given an `image` with 16 channels
# it takes it for latents and packs it (repeating it to the batch size); without `latents` it
# draws noise [B, 16, h, w] from the generator and packs that. Here a batch of 2 non-square
# latents (6×10, an image of 48×80 px):

# %%
latents = torch.randn(2, 16, 6, 10, generator=torch.Generator().manual_seed(0)).to(device)  # [B, C, h, w]
_, image_tokens, _, _ = pipe.prepare_latents(latents, 2, 16, 48, 80, torch.float32, device)
_ = kt.compare("pack vs prepare_latents(image)", pack_latents(latents), image_tokens, atol=0, rtol=0)

noise_tokens, *_ = pipe.prepare_latents(None, 2, 16, 48, 80, torch.float32, device, torch.Generator().manual_seed(1))
noise = torch.randn(2, 16, *latent_size(48, 80), generator=torch.Generator().manual_seed(1))  # [2, 16, 6, 10]
_ = kt.compare("pack vs prepare_latents(noise)", pack_latents(noise), noise_tokens, atol=0, rtol=0)

# %% [markdown]
# Your own `latents=` are **not** packed for you: `prepare_latents` returns them as given. Pass
# `pack_latents(noise)`, [B, L, 64], or the transformer will fail later with a less clear error.

# %%
returned, *_ = pipe.prepare_latents(None, 2, 16, 48, 80, torch.float32, device, None, noise)
print("returned as given:", torch.equal(returned.cpu(), noise), "| shape", tuple(returned.shape),
      "| what the transformer wants:", tuple(pack_latents(noise).shape))

# %% [markdown]
# **Unpack.** First the property: unpacking returns every bit. Then the pipeline: after its
# denoising loop it unpacks, undoes the VAE scaling and decodes. With `output_type="latent"` it
# returns the packed tokens instead; unpacking those ourselves and decoding must give the
# pipeline's image. The condition image (64×96) and the output (48×80) have different sizes on
# purpose, and a hook on the transformer records the sequence it receives.

# %%
print("unpack(pack(x)) == x:", torch.equal(unpack_latents(pack_latents(latents), 6, 10), latents))

seen = {}


def record_sequence(module, args, kwargs):
    seen.update(image=tuple(kwargs["hidden_states"].shape), text=tuple(kwargs["encoder_hidden_states"].shape))


condition = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))  # in [0, 1]
call = dict(image=condition, prompt="make the square blue", height=48, width=80, max_area=48 * 80,
            _auto_resize=False, num_inference_steps=2)
hook = pipe.transformer.register_forward_pre_hook(record_sequence, with_kwargs=True)
out_tokens = pipe(**call, output_type="latent", generator=torch.Generator().manual_seed(0)).images  # [1, L, 64]
hook.remove()
out_image = pipe(**call, output_type="pt", generator=torch.Generator().manual_seed(0)).images  # [1, 3, 48, 80]

with torch.no_grad():
    out_latents = unpack_latents(out_tokens, *latent_size(48, 80))  # [1, 16, 6, 10]
    decoded = pipe.vae.decode(out_latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
ours = (decoded / 2 + 0.5).clamp(0, 1)  # the pipeline's postprocess for output_type="pt"
print("packed output", tuple(out_tokens.shape), "-> unpacked", tuple(out_latents.shape))
_ = kt.compare("unpack + decode vs pipeline", ours, out_image, atol=1e-6, rtol=1e-6)

# %% [markdown]
# The transformer saw [target; context] image tokens and 512 text tokens, exactly what the
# token counts predict: 48×80 px → 3×5 target tokens, 64×96 px → 4×6 context tokens.

# %%
expected = edit_sequence(48, 80, context_size=(64, 96))
print("transformer input: image tokens", seen["image"], "| text", seen["text"])
print(f"predicted: {expected.target} target + {expected.context} context = {expected.target + expected.context} "
      f"image tokens, {expected.text} text tokens")
assert seen["image"][1] == expected.target + expected.context and seen["text"][1] == expected.text

# %% [markdown]
# ### 4. A permutation: every value moves, none changes
#
# The tokens hold exactly the latent's values, and `token_feature_sources` says where each came
# from: indexing the latent with it rebuilds the tokens.

# %%
tokens = pack_latents(latents)  # [2, 15, 64]
print("same values, sorted:", torch.equal(tokens.flatten(1).sort().values, latents.flatten(1).sort().values))
c, y, x = token_feature_sources(16, 6, 10).unbind(-1)  # each [L, 64]
print("tokens[b, t, f] == latents[b, c, y, x]:", torch.equal(tokens, latents[:, c, y, x]))
positions = (c * 6 + y) * 10 + x
print("every latent position used exactly once:",
      torch.equal(positions.flatten().sort().values, torch.arange(16 * 6 * 10)))

# %% [markdown]
# ### 5. The relatives: pixel_unshuffle and a 2×2 convolution
#
# `torch.nn.functional.pixel_unshuffle(x, 2)` is PyTorch's space-to-depth. It returns an image
# [B, 4C, h/2, w/2] whose channel 4c + 2·ph + pw holds channel c at offset (ph, pw): **the same
# feature order (c, ph, pw)**. The difference is layout only: pixel_unshuffle keeps features on
# axis 1 and the grid on axes 2–3 (an image); packing wants the grid flattened row by row into
# a sequence and the features last. `flatten(2).transpose(1, 2)` does that:

# %%
unshuffled = F.pixel_unshuffle(latents, 2)  # [B, 4C, h/2, w/2]
print("pixel_unshuffle:", tuple(unshuffled.shape), "-> flatten(2).transpose(1, 2):",
      tuple(unshuffled.flatten(2).transpose(1, 2).shape))
_ = kt.compare("pixel_unshuffle vs pack", pack_with_pixel_unshuffle(latents), pack_latents(latents), atol=0, rtol=0)
print("unshuffled channel 37 == latent channel 9 at offset (0, 1):",
      torch.equal(unshuffled[:, 37], latents[:, 9, 0::2, 1::2]))

# %% [markdown]
# The tempting wrong order, pixel-major (ph, pw, c), has the same numbers in each token but in
# other places: feature 16·o + c instead of 4·c + o, for offset o = 2·ph + pw. Only the 4 features
# with 15·o = 3·c (c = 5·o) happen to stay put:

# %%
def pack_pixel_major(latents):  # WRONG for FLUX: features ordered (ph, pw, c)
    b, c, h, w = latents.shape
    patches = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 3, 5, 1)  # [B, h/2, w/2, ph, pw, C]
    return patches.reshape(b, (h // 2) * (w // 2), 4 * c)


wrong, right = pack_pixel_major(latents), pack_latents(latents)
print("same numbers in every token:", torch.equal(wrong.sort(-1).values, right.sort(-1).values))
print(f"features in the right place: {(wrong == right).float().mean().item():.1%}")

# %% [markdown]
# Why the order matters: `x_embedder` is a Linear whose weight [D, 64] has one column per
# feature. Read as conv kernels [D, 16, 2, 2], that weight is a 2×2, stride-2 convolution over
# the latent, and (c, ph, pw) is precisely a kernel's (input channel, kernel row, kernel col)
# order. Packing + Linear = convolution, checked on the pipeline's own `x_embedder`:

# %%
x_embedder = pipe.transformer.x_embedder
full_width = full_size.TRANSFORMER["num_attention_heads"] * full_size.TRANSFORMER["attention_head_dim"]
print("miniature:", x_embedder, "| full size: Linear(64 -> %d)" % full_width)
with torch.no_grad():
    _ = kt.compare("conv 2x2/2 vs x_embedder(pack)", patch_embed_as_conv(latents, x_embedder),
                   x_embedder(pack_latents(latents)), atol=1e-5, rtol=1e-5)

# %% [markdown]
# ### 6. Odd sizes: a clear error instead of a reshape failure
#
# A latent with an odd side has no whole 2×2 patches. The pipeline never makes one from an
# image (it floors sides to multiples of 16 first), but cached latents handed over directly can
# have one, e.g. from a 40×48 px training image. diffusers then fails inside `view`;
# `pack_latents` says what to do:

# %%
odd = torch.zeros(1, 16, 5, 6)  # a 40 x 48 px image's latent
try:
    pipe.prepare_latents(odd, 1, 16, 48, 48, torch.float32, device)
except RuntimeError as error:
    print("diffusers:", error)
try:
    pack_latents(odd)
except ValueError as error:
    print("pack_latents:", error)

# %% [markdown]
# Sizes that are not multiples of 16 never reach packing from the pipeline either. Asked for
# `height=1000, width=600`, `__call__` first rescales the area to `max_area` (1024² by
# default) and only then floors both sides to 16; flooring alone (`latent_size`) is what
# happens only with `max_area=height * width`. Both, checked against the target tokens the
# pipeline really made (`observe_pipeline_sizes` from notebook 01 reads them from the
# position ids and stops before the first denoising step). BFL's `get_noise` would round up
# instead (`2 * math.ceil(height / 16)`), but its Kontext path never hands it such a size:
# `prepare_kontext` defaults the target to the resized condition image, and the command line
# floors a requested size to 16 (`aspect_ratio_to_height_width`).

# %%
probe = Image.new("RGB", (64, 64))
for label, extra in [("default max_area", {}), ("max_area=height*width", dict(max_area=1000 * 600))]:
    observed = observe_pipeline_sizes(pipe, probe, height=1000, width=600, _auto_resize=False, **extra).output
    predicted = output_size(height=1000, width=600, **extra)
    print(f"height=1000, width=600, {label:<22} -> pipeline output {observed} (predicted {predicted}), "
          f"latent {latent_size(observed.height, observed.width)}")
    assert observed == predicted
print("flooring alone: latent of 1000 x 600 px:", latent_size(1000, 600))

# %% [markdown]
# ### 7. Token counts for the 17 preferred resolutions
#
# Kontext snaps every condition image to one of 17 preferred (width, height) sizes, all about
# one megapixel (`01_image_preprocessing`). For an edit whose output has the condition image's
# size, the transformer attends over 512 text + target + context tokens. "pairs" is the number of
# query-key scores per head and layer, (512 + 2·tokens)²; "vs t2i" compares with text-to-image at
# the same size, without a context image.

# %%
table = preferred_resolution_table()
print(format_resolution_table(table))
tokens_range = [r["tokens"] for r in table]
cost_range = [r["relative_cost"] for r in table]
print(f"tokens {min(tokens_range)}..{max(tokens_range)}, attention vs 1024²: "
      f"{min(cost_range):.3f}..{max(cost_range):.3f}")

# %% [markdown]
# Checked against the pipeline: `prepare_latents` with a condition latent of each size returns
# that many target and context tokens.

# %%
for row in table:
    h, w = row["height"], row["width"]
    target, context, _, _ = pipe.prepare_latents(torch.zeros(1, 16, h // 8, w // 8, device=device), 1, 16, h, w,
                                                 torch.float32, device)
    assert target.shape[1] == context.shape[1] == row["tokens"], (w, h)
print(f"all {len(table)} token counts match prepare_latents")

# %%
fig = draw_sequence_costs(table)
plt.show()

# %% [markdown]
# Two things stand out. The aspect ratio barely matters: every preferred size has within 2 % of
# 4096 tokens, so attention costs within 3 % of a 1024×1024 edit. The context image is what
# matters: it nearly doubles the sequence, so attention does about 3.6× the work of
# text-to-image at the same size.
#
# To get an output the size of the condition image in diffusers, pass `height`, `width` **and**
# `max_area=height * width`. Without `max_area` the area is rescaled to 1024² and floored to 16:

# %%
print("height=1568, width=672 without max_area ->", output_size(height=1568, width=672))
print("no height/width at all ->", output_size())

# %% [markdown]
# ### 8. What attention costs next to the rest
#
# Quadratic does not mean dominant. In every block each token passes through 12·D² weights
# (q, k, v, out: 4·D²; the MLP D → 4D → D: 8·D²), 24·D² FLOPs, while attention costs 4·L·D FLOPs
# per token (QKᵀ and AV). Attention's share is about L / (L + 6·D): with D = 3072 it reaches half
# only at L = 18,432 tokens. The FLOP counts come from `kontext_teach.anatomy.transformer_costs.step_flops`
# (`07_transformer_forward` checks them against `torch.utils.flop_counter`).

# %%
for size, kontext in [(1024, False), (1024, True), (2048, True)]:
    sequence = edit_sequence(size, size, context_size=(size, size) if kontext else None)
    print(describe_resolution(size, size, kontext=kontext).splitlines()[-1],
          f"({'Kontext' if kontext else 'text-to-image'} {size}², L = {sequence.total})")

# %%
fig = draw_flops(list(range(256, 2049, 32)))
plt.show()

# %% [markdown]
# At 1024² a Kontext edit spends about a third of its FLOPs on attention; the linear layers,
# which grow only like L, still do most of the work. Packing made both cheaper: 4× fewer tokens
# for the linear layers, 16× fewer pairs for attention.
#
# ### 9. Explore: pick a resolution
#
# `describe_resolution` computes everything the widget shows; here it is called once plainly,
# then behind a drop-down.

# %%
print(describe_resolution(880, 1184))

# %%
resolution_view = widgets.HTML()  # the widget only shows text; describe_resolution computes it


def show_resolution(resolution=(1024, 1024), kontext=True):
    resolution_view.value = f"<pre>{html.escape(describe_resolution(*resolution, kontext=kontext))}</pre>"


choices = widgets.Dropdown(options=[(f"{w} x {h}", (w, h)) for w, h in PREFERRED_KONTEXT_RESOLUTIONS],
                           value=(1024, 1024), description="W x H px")
widgets.VBox([widgets.interactive(show_resolution, resolution=choices, kontext=True), resolution_view])

# %% [markdown]
# ## Summary
# - Packing cuts the latent [B, 16, h, w] into 2×2 patches and reads them row by row: tokens
#   [B, (h/2)(w/2), 64]; value (c, y, x) goes to token (y//2)·(w/2) + x//2, feature
#   4c + 2(y mod 2) + (x mod 2): order (c, ph, pw). Ours equals `prepare_latents`, bit for bit.
# - Unpacking is the exact inverse; with it we reproduced the pipeline's decoded image.
# - Packing is a permutation: nothing learned, nothing changed. It is `pixel_unshuffle` with
#   the grid flattened and the features moved last; with `x_embedder` it is a 2×2 stride-2 conv.
# - Sides must be multiples of 16 (8 VAE × 2 patch); `pipe(latents=...)` expects packed tokens.
# - A 1 MP Kontext edit is 512 + ~4096 + ~4096 ≈ 8700 tokens at every preferred aspect ratio;
#   the context image makes attention ~3.6× as expensive as text-to-image, yet attention is
#   still only about a third of the FLOPs at that size.

# %% [markdown]
# ## Exercises
#
# **1. Pack without reshape or permute.** `torch.nn.functional.unfold` with a 2×2 kernel and
# stride 2 cuts every patch out as a column. Write `pack_with_unfold(latents)` and its inverse
# `unpack_with_fold(tokens, h, w)` (with `F.fold`). *Hint:* in which order does unfold list the
# values of one patch?

# %%
from kontext_teach.solutions import s04_packing as s04

_ = kt.compare("exercise 1: unfold", s04.pack_with_unfold(latents), pack_latents(latents), atol=0, rtol=0)
_ = kt.compare("exercise 1: fold", s04.unpack_with_fold(pack_latents(latents), 6, 10), latents, atol=0, rtol=0)

# %% [markdown]
# **2. Where does a value go?** Write `token_and_feature(c, y, x, latent_width)` returning the
# token and feature index of latent value (c, y, x), without packing anything. Check it on a
# 1024×768 image's latent.

# %%
big = torch.randn(1, 16, 96, 128, generator=torch.Generator().manual_seed(3))  # W x H = 1024 x 768 px
big_tokens = pack_latents(big)
for c_, y_, x_ in [(0, 0, 0), (9, 37, 100), (15, 95, 127)]:
    t, f = s04.token_and_feature(c_, y_, x_, 128)
    print(f"(c, y, x) = ({c_}, {y_}, {x_}) -> token {t}, feature {f}:", bool(big_tokens[0, t, f] == big[0, c_, y_, x_]))

# %% [markdown]
# **3. A token budget.** Your GPU holds a sequence of at most N tokens (a Kontext edit at 1024²
# is 8704). What is the largest square output, a multiple of 16, that fits, for a Kontext edit
# with an equal-size context image, and for text-to-image? Write
# `largest_square_side(max_tokens, kontext=True)`.

# %%
for budget in (8704, 16384):
    for kontext in (True, False):
        side = s04.largest_square_side(budget, kontext=kontext)
        fits = edit_sequence(side, side, context_size=(side, side) if kontext else None).total
        print(f"{budget} tokens, {'Kontext' if kontext else 'text-to-image':<13}: {side} x {side} px ({fits} tokens)")

# %% [markdown]
# ## References
# - diffusers `pipelines/flux/pipeline_flux_kontext.py`: `FluxKontextPipeline.prepare_latents`,
#   `_pack_latents`, `_unpack_latents`, `__call__` (output size from `max_area`, `output_type="latent"`),
#   `PREFERRED_KONTEXT_RESOLUTIONS`.
# - diffusers `models/transformers/transformer_flux.py`: `FluxTransformer2DModel.x_embedder`
#   (Linear 64 → 3072), `proj_out` (back to 64).
# - Black Forest Labs `flux`, `src/flux/sampling.py`: `get_noise` (`2 * math.ceil(height / 16)`),
#   `prepare` (`rearrange(img, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)`), `unpack`.
# - PyTorch: `torch.nn.functional.pixel_unshuffle`, `unfold` / `fold`, `conv2d`.
# - W. Shi et al., *Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
#   Convolutional Neural Network*, CVPR 2016, arXiv:1609.05158 (pixel shuffle / space-to-depth).
# - A. Dosovitskiy et al., *An Image is Worth 16x16 Words*, ICLR 2021, arXiv:2010.11929 (patches as tokens).
# - W. Peebles, S. Xie, *Scalable Diffusion Models with Transformers* (DiT), ICCV 2023,
#   arXiv:2212.09748 (patchify on latents; smaller patches, more tokens, more Gflops).
# - P. Esser et al., *Scaling Rectified Flow Transformers for High-Resolution Image Synthesis*
#   (SD3, MMDiT), ICML 2024, arXiv:2403.03206 (2×2 latent patches, joint text-image attention).
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing
#   in Latent Space*, 2025, arXiv:2506.15742 (context tokens appended to the target sequence).
