# %% [markdown]
# # 05 · Position ids and RoPE: how the transformer knows where each token is
#
# After packing (`04_packing`) an edit is a bag of tokens: 512 text tokens, the noisy target
# tokens and the context-image tokens. `FluxKontextPipeline` gives every token three numbers,
# (virtual time, row, column), and the transformer turns them into rotations of its queries
# and keys: rotary position embedding, RoPE. This notebook rebuilds the ids the pipeline
# passes as `txt_ids` / `img_ids` and the `FluxPosEmbed` + `apply_rotary_emb` pair inside every
# attention layer, then measures what Kontext's one change to the ids, a first coordinate
# of 1 on the context image, does in the embedded model.
#
# ## What you will learn
# - build the three id sets (text `(0, 0, 0)`, target `(0, row, col)`, context `(1, row, col)`)
#   and check them against the pipeline's `prepare_latents` and `encode_prompt`
# - compute FLUX's 3-axis RoPE from scratch (frequencies, interleaved cos/sin tables, the
#   rotation of q and k) and check it against `FluxPosEmbed` and `apply_rotary_emb`, at full
#   size, axes (16, 56, 56), and in the miniature (its axes are printed below)
# - show that a RoPE score depends only on position differences, and why text tokens, at
#   angle 0, still see where an image token is
# - say what the context offset changes, and what it does not, measured in the embedded transformer
# - correct two common misreadings of `text_ids` and of the first coordinate
#
# ## Prerequisites
# - `04_packing`: one token per 2×2 latent patch, in row-major order
# - `02_prompt_encoding`: the 512 T5 tokens and where `text_ids` come from
# - scaled dot-product attention, softmax(q·k/√d)·v, and 2-D rotation matrices

# %%
import kontext_teach as kt

device = kt.setup()

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from kontext_teach import rope
from kontext_teach.anatomy import full_size
from kontext_teach import position_ids as pid
from kontext_teach.lab.harness import figure_png

pipe = kt.load_pipeline()
FULL_AXES = full_size.TRANSFORMER["axes_dims_rope"]  # FLUX.1-Kontext-dev: (16, 56, 56)
MINI_AXES = tuple(pipe.transformer.config.axes_dims_rope)  # the loaded model's (the embedded miniature's)
MINI_LABEL = f"loaded model {MINI_AXES}"
AXIS_NAMES = pid.ID_AXES  # ("virtual time", "row", "column")
print("full-size axes", FULL_AXES, "sum", sum(FULL_AXES), "= head dim", full_size.TRANSFORMER["attention_head_dim"])
print("miniature axes", MINI_AXES, "sum", sum(MINI_AXES), "= head dim", pipe.transformer.config.attention_head_dim)

# %% [markdown]
# ## Theory
#
# **Why positions at all.** Attention compares every query with every key and has no notion
# of order: shuffle the tokens and the outputs come back shuffled the same way. Where a
# token is has to be written into q and k.
#
# **RoPE on one axis.** Split a d-channel vector into d/2 adjacent pairs
# (x<sub>2j</sub>, x<sub>2j+1</sub>). A token at position p turns pair j by the angle p·ω<sub>j</sub>,
# with ω<sub>j</sub> = 1 / θ<sup>2j/d</sup> and θ = 10000: the first pair turns 1 radian per
# step, the last barely moves. In table form, with `cos` and `sin` holding each angle twice
# (c0 c0 c1 c1 …, "repeat-interleaved") and rot(x) turning each pair (a, b) into (−b, a):
#
# x′ = x ⊙ cos + rot(x) ⊙ sin
#
# Rotations compose, R(a)ᵀR(b) = R(b − a), so a query turned at p and a key turned at s give
# ⟨R(p)q, R(s)k⟩ = ⟨q, R(s − p)k⟩: **the score depends on the offset s − p only**.
#
# **Three axes in FLUX.** A token's id is (t, row, col). The head dim is cut into three
# slices, one per coordinate: FLUX.1 uses 16 + 56 + 56 = 128 channels; the miniature's
# much narrower split is printed above. Each slice is a 1-D RoPE with its own frequencies θ<sup>−2j/d<sub>axis</sub></sup>.
# The same rotation is used in every head and every block; it is applied to queries and keys
# after their RMSNorm, over the joint sequence [text; image] (values are not rotated).
#
# **The ids of a Kontext edit** (counts at 1024×1024 with a 1024×1024 condition image):
#
# | tokens | count | id |
# |---|---|---|
# | text (T5) | 512 | (0, 0, 0) |
# | target, the noisy latent | 64 × 64 = 4096 | (0, row, col) |
# | context, the condition image | 64 × 64 = 4096, its own grid | (1, row, col) |
#
# Inside the transformer the ids are stacked as [text; target; context], the order of the
# tokens. Black Forest Labs' `prepare_kontext` builds the context ids as "the same as base
# image with the first dimension set to 1"; the Kontext paper calls that coordinate a
# *virtual time step*: the i-th context image sits at t = i, the released model uses one, t = 1.
#
# **Two tempting misreadings.**
# - *"`text_ids` are all zero, so text gets no RoPE."* RoPE is applied to the text queries and
#   keys too, at angle 0, where the rotation is the identity. Their order comes from T5, not
#   from RoPE. And a text–image score ⟨q<sub>text</sub>, R(row, col) k<sub>image</sub>⟩ still depends
#   on where the image token is.
# - *"The first coordinate 1 marks the image domain."* The target tokens are image tokens
#   too and carry 0. The 1 marks the Kontext **context** image: it is the only coordinate in
#   which the context copy of a cell (row, col) differs from the target's.

# %% [markdown]
# ## Practice
#
# ### 1. The ids, from scratch and from the pipeline
#
# A target of 128×96 px is 8×6 tokens (16 px per token: 8 for the VAE, 2 for packing). For the
# condition image we take 96×160 px, 6×10 tokens: Kontext does not need it to match the
# target. `prepare_latents` builds both id sets; given a 16-channel tensor as the image it
# skips the VAE (notebook 03 encodes real pictures), which is all we need here.

# %%
target_px, context_px = (128, 96), (96, 160)  # (height, width) in pixels
target_grid, context_grid = pid.token_grid(*target_px), pid.token_grid(*context_px)  # (rows, cols) of tokens
print("target grid", target_grid, "| context grid", context_grid)

generator = torch.Generator().manual_seed(0)
context_latents = torch.randn(1, 16, context_px[0] // 8, context_px[1] // 8, generator=generator)  # [1, 16, 12, 20]
_, _, latent_ids, image_ids = pipe.prepare_latents(context_latents, 1, 16, *target_px, torch.float32, device, generator)
_, _, pipe_text_ids = pipe.encode_prompt(prompt="make the circle blue", prompt_2=None, device=device)
print("latent_ids", tuple(latent_ids.shape), "| image_ids", tuple(image_ids.shape),
      "| text_ids", tuple(pipe_text_ids.shape))

kt.compare("target ids (0, row, col)", pid.latent_grid_ids(*target_grid), latent_ids, atol=0, rtol=0)
kt.compare("context ids (1, row, col)", pid.latent_grid_ids(*context_grid, pid.CONTEXT_INDEX), image_ids,
           atol=0, rtol=0)
kt.compare("text ids (0, 0, 0)", pid.text_ids(512), pipe_text_ids, atol=0, rtol=0)
kt.compare("ids in the model", pid.transformer_ids(512, target_grid, context_grid),
           torch.cat([pipe_text_ids, latent_ids, image_ids]), atol=0, rtol=0)

# %% [markdown]
# Each id set drawn as three pictures, one per coordinate. Both grids start at (row 0, col 0):
# the context image lies *on top of* the target in (row, col), one step away in virtual time.

# %%
fig, axes = plt.subplots(2, 3, figsize=(11, 5.6), gridspec_kw=dict(width_ratios=[1, 1, 1]))
id_sets_drawn = [("target", latent_ids, target_grid), ("context", image_ids, context_grid)]
for axes_row, (name, ids, grid) in zip(axes, id_sets_drawn):
    planes = pid.ids_as_planes(ids, *grid)  # [3, rows, cols]
    for ax, plane, axis_name, top in zip(axes_row, planes, AXIS_NAMES, [1, 9, 9]):
        ax.imshow(plane, cmap="viridis", vmin=0, vmax=top)
        for (r, c), value in np.ndenumerate(plane.int().numpy()):
            ax.text(c, r, value, ha="center", va="center", fontsize=7, color="white" if value < top / 2 else "black")
        ax.set_title(f"{name}: {axis_name}", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("Position ids as pictures: target (8×6 tokens) and context (6×10 tokens)")
plt.tight_layout()
plt.show()

# %% [markdown]
# At full size the same functions give the 8704 ids of a 1024² edit. The pipeline's methods
# do not depend on the model's width, so the miniature's `prepare_latents` builds them too.

# %%
full_context = torch.randn(1, 16, 128, 128, generator=generator)  # a 1024² condition image's latent
_, _, full_latent_ids, full_image_ids = pipe.prepare_latents(full_context, 1, 16, 1024, 1024, torch.float32, device,
                                                             generator)
full_ids = pid.transformer_ids(512, pid.token_grid(1024, 1024), pid.token_grid(1024, 1024))  # [8704, 3]
kt.compare("1024² ids in the model", full_ids, torch.cat([pipe_text_ids, full_latent_ids, full_image_ids]),
           atol=0, rtol=0)

segments = [("text", 0, 512), ("target", 512, 512 + 4096), ("context", 512 + 4096, 8704)]
fig, axes = plt.subplots(3, 1, figsize=(11, 4.6), sharex=True)
for ax, coordinate, axis_name in zip(axes, full_ids.T, AXIS_NAMES):
    ax.plot(coordinate, lw=0.6, color="#333333")
    for (name, start, end), colour in zip(segments, ["#fde2c8", "#e3f1dc", "#dbe9f6"]):
        ax.axvspan(start, end, color=colour, zorder=0)
        if axis_name == "virtual time":
            ax.text((start + end) / 2, 1.25, name, ha="center", fontsize=9)
    ax.set_ylabel(axis_name)
axes[0].set_ylim(-0.2, 1.6)
axes[-1].set_xlabel("token index in [text; target; context]")
fig.suptitle("The 8704 ids of a 1024² Kontext edit, coordinate by coordinate")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 2. Frequencies, axis by axis
#
# ω<sub>j</sub> = 1 / θ<sup>2j/d</sup> for j = 0 … d/2 − 1. diffusers computes them inside
# `get_1d_rotary_pos_embed`; asked for complex numbers (`use_real=False`) it returns
# e<sup>i·p·ω<sub>j</sub></sup>, so at position p = 1 it holds e<sup>i·ω<sub>j</sub></sup>: our
# frequencies, put on the unit circle with `torch.polar`, must give the same numbers.

# %%
for label, axes_dims in [("full", FULL_AXES), ("miniature", MINI_AXES)]:
    for axis_name, dim in zip(AXIS_NAMES, axes_dims):
        omega = rope.rope_frequencies(dim)  # [dim/2], float64
        ours = torch.polar(torch.ones_like(omega), omega)  # e^(i·ω): ω placed on the unit circle
        cis = get_1d_rotary_pos_embed(dim, torch.tensor([1.0]), theta=10000, use_real=False, freqs_dtype=torch.float64)
        kt.compare(f"e^iω {label} {axis_name} (d={dim})", torch.view_as_real(ours), torch.view_as_real(cis[0]),
                   atol=1e-12, rtol=0)

# %%
print(f"{'axis':<22}{'pairs':>6}{'fastest ω':>11}{'slowest ω':>11}{'longest period (tokens)':>26}")
for label, axes_dims in [("full", FULL_AXES), ("miniature", MINI_AXES)]:
    for axis_name, dim in zip(AXIS_NAMES, axes_dims):
        omega = rope.rope_frequencies(dim)
        print(f"{label + ' ' + axis_name:<22}{dim // 2:>6}{omega[0].item():>11.4f}{omega[-1].item():>11.6f}"
              f"{2 * np.pi / omega[-1].item():>26,.0f}")
row_omega = rope.rope_frequencies(FULL_AXES[1])
quiet = int((63 * row_omega < 0.1).sum())
print(f"full row axis: {quiet} of {len(row_omega)} pairs turn by less than 0.1 rad "
      "across all 64 rows of a 1024² image")

# %% [markdown]
# The spectrum: each axis starts again at ω = 1 and falls geometrically. Wide axes cover many
# scales (56 channels: periods from 6 to 45,000 tokens); the miniature's narrow axes have
# only a few frequencies each (right). The slow pairs hardly turn across an image: they carry
# almost no position, so the model keeps channels in which it can compare content wherever
# the two tokens are.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw=dict(width_ratios=[3, 1.2]))
colours = ["#7b3294", "#1b7837", "#2166ac"]
for ax, (label, axes_dims) in zip(axes, [("FLUX.1 (16, 56, 56)", FULL_AXES), (MINI_LABEL, MINI_AXES)]):
    start = 0
    for axis_name, dim, colour in zip(AXIS_NAMES, axes_dims, colours):
        channels = start + np.arange(0, dim, 2)  # first channel of each pair
        ax.stem(channels, rope.rope_frequencies(dim).numpy(), linefmt=colour, markerfmt="o", basefmt=" ",
                label=axis_name)
        start += dim
        ax.axvline(start - 0.5, color="#999999", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("channel of the head")
    ax.set_title(label, fontsize=10)
axes[0].set_ylabel("ω (radians per position step)")
fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=3, fontsize=9)
plt.tight_layout(rect=(0, 0, 1, 0.9))
plt.show()

# %% [markdown]
# ### 3. The cos and sin tables
#
# Per axis: angles [S, d/2] = outer(positions, ω), then cos and sin, each repeated for its two
# channels. `FluxPosEmbed` concatenates the three axes' tables to [S, head dim]. We compare
# one-axis tables with `get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True)`,
# then whole tables with `FluxPosEmbed` on several id sets, full-size and miniature axes.

# %%
positions = torch.tensor([0.0, 1.0, 5.0, 63.0, 97.0])
for dim in sorted(set(FULL_AXES + MINI_AXES)):
    cos, sin = get_1d_rotary_pos_embed(dim, positions, theta=10000, use_real=True, repeat_interleave_real=True,
                                       freqs_dtype=torch.float64)
    ours_cos, ours_sin = rope.rope_cos_sin(positions, dim)  # [5, dim] each
    kt.compare(f"1-D cos table, d={dim}", ours_cos, cos, atol=1e-6, rtol=0)
    kt.compare(f"1-D sin table, d={dim}", ours_sin, sin, atol=1e-6, rtol=0)

id_sets = {
    "1024² edit": full_ids,
    "1568x672 + 672x1568": pid.transformer_ids(512, pid.token_grid(1568, 672), pid.token_grid(672, 1568)),
    "miniature, section 1": pid.transformer_ids(512, target_grid, context_grid),
}
for label, axes_dims in [("full", FULL_AXES), ("mini", MINI_AXES)]:
    reference = FluxPosEmbed(theta=10000, axes_dim=list(axes_dims))
    for name, ids in id_sets.items():
        ours_cos, ours_sin = rope.rope_tables(ids, axes_dims)  # [S, sum(axes_dims)] each
        theirs_cos, theirs_sin = reference(ids)
        kt.compare(f"{label} cos, {name}", ours_cos, theirs_cos, atol=1e-6, rtol=0)
        kt.compare(f"{label} sin, {name}", ours_sin, theirs_sin, atol=1e-6, rtol=0)

# %% [markdown]
# The cos table of a short sequence (8 text tokens, then the 8×6 target and an 8×6 context),
# tokens down, channels across. Text rows are all 1 (angle 0); the
# columns come in identical pairs (the interleave); within each axis block the fast channels
# on the left change from token to token, the slow ones on the right barely; and the
# target and context halves are identical except in the first block, the virtual-time channels.

# %%
short_ids = pid.transformer_ids(8, (8, 6), (8, 6))  # [8 + 48 + 48, 3]
fig, axes = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw=dict(width_ratios=[4, 1.4]))
for ax, (label, axes_dims) in zip(axes, [("FLUX.1 axes (16, 56, 56)", FULL_AXES), (MINI_LABEL, MINI_AXES)]):
    cos, _ = rope.rope_tables(short_ids, axes_dims)  # [104, D]
    image = ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    for boundary in np.cumsum(axes_dims)[:-1]:
        ax.axvline(boundary - 0.5, color="black", lw=1)
    for boundary, name in [(8, "target"), (56, "context")]:
        ax.axhline(boundary - 0.5, color="black", lw=1)
        ax.text(-1, boundary + 1, name, ha="right", va="top", fontsize=8)
    ax.text(-1, 0, "text", ha="right", va="top", fontsize=8)
    ax.set_xlabel("channel")
    ax.set_title(label, fontsize=10)
    ax.set_yticks([])
fig.colorbar(image, ax=axes, shrink=0.8, label="cos(angle)")
plt.show()

# %% [markdown]
# ### 4. Turning q and k
#
# `apply_rope` computes x ⊙ cos + rot(x) ⊙ sin in fp32, on queries laid out [B, S, heads, head dim]
# as `FluxAttnProcessor` holds them. Checked against diffusers' `apply_rotary_emb` for both
# head sizes, then two properties: a rotation keeps every pair's length, and at angle 0 (the
# text ids) it is the identity.

# %%
for label, axes_dims, ids, n_text in [("full", FULL_AXES, short_ids, 8),
                                      ("mini", MINI_AXES, id_sets["miniature, section 1"], 512)]:
    q = torch.randn(2, ids.shape[0], 3, sum(axes_dims), generator=generator)  # [B, S, H, D]
    cos, sin = rope.rope_tables(ids, axes_dims)
    turned = rope.apply_rope(q, cos, sin)
    theirs = apply_rotary_emb(q, FluxPosEmbed(10000, list(axes_dims))(ids), sequence_dim=1)
    kt.compare(f"rotated q, {label}", turned, theirs, atol=1e-6, rtol=0)
    kt.compare(f"lengths kept, {label}", turned.norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)
    print(f"{label}: the {n_text} text rows come out unchanged, bit for bit:",
          torch.equal(turned[:, :n_text], q[:, :n_text]))

# %% [markdown]
# One channel pair of a query, the vector (1, 0), as the token moves down rows 0 … 7 on the
# full-size row axis: the fastest pair turns 1 radian (57°) per row, pair 7 turns 0.1 radian,
# pair 20 barely moves.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
angles = rope.rope_angles(torch.arange(8.0), FULL_AXES[1])  # [8 rows, 28 pairs]
for ax, pair in zip(axes, [0, 7, 20]):
    for row, angle in enumerate(angles[:, pair]):
        ax.annotate("", xy=(np.cos(angle), np.sin(angle)), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color=plt.cm.viridis(row / 7), lw=1.5))
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="#bbbbbb"))
    ax.set_xlim(-1.2, 1.2), ax.set_ylim(-1.2, 1.2), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title(f"row pair {pair}: ω = {rope.rope_frequencies(FULL_AXES[1])[pair].item():.4f}", fontsize=10)
fig.suptitle("(1, 0) turned for rows 0 (dark) to 7 (yellow)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 5. Only differences count
#
# Take random queries and keys at random ids, and the same vectors with every id moved by the
# same shift. The scores must not change: RoPE sees s − p, never p or s alone.

# %%
q, k = torch.randn(6, sum(FULL_AXES), generator=generator), torch.randn(9, sum(FULL_AXES), generator=generator)
q_ids = torch.randint(0, 64, (6, 3), generator=generator).float()
k_ids = torch.randint(0, 64, (9, 3), generator=generator).float()
scores = rope.rope_scores(q, k, q_ids, k_ids, FULL_AXES)  # [6, 9] dot products after rotation
for shift in [(1.0, 0.0, 0.0), (0.0, 17.0, -5.0), (3.0, 40.0, 63.0)]:
    shifted = rope.rope_scores(q, k, q_ids + torch.tensor(shift), k_ids + torch.tensor(shift), FULL_AXES)
    kt.compare(f"scores, ids + {shift}", shifted, scores, atol=1e-4, rtol=1e-4)

# %% [markdown]
# So the effect of position alone can be drawn as a function of the offset. Take an all-ones
# query and key (every pair equally weighted): their cosine similarity after rotation is the
# mean of cos(ω<sub>j</sub>·Δ) over all pairs, `rope_similarity`, which we check against the
# rotated dot product. Along the row axis it starts at 1 and falls off with the distance; the
# fast pairs make it wiggle, and an axis with few channels (the miniature's) has little to
# average over, so it swings far below 0 and back. The markers at Δ = 0 show a target token and
# its context twin (same cell, first coordinate 1 vs 0): RoPE alone makes them almost, but not
# exactly, alike.

# %%
ones = torch.ones(1, sum(FULL_AXES))
key_ids = torch.stack([torch.zeros(64), torch.arange(64.0), torch.zeros(64)], dim=1)  # keys 0..63 rows below
kt.compare("similarity = scores of ones / D", rope.rope_similarity(key_ids, FULL_AXES),
           rope.rope_scores(ones, ones.expand(64, -1), torch.zeros(1, 3), key_ids, FULL_AXES)[0] / sum(FULL_AXES),
           atol=1e-5, rtol=0)

offsets = torch.arange(64.0)[:, None]  # [64, 1]
row_offsets = torch.cat([0 * offsets, offsets, 0 * offsets], dim=1)  # Δ = (0, Δrow, 0)
fig, ax = plt.subplots(figsize=(9, 3.8))
for label, axes_dims, style in [("FLUX.1", FULL_AXES, "-"), ("miniature", MINI_AXES, "--")]:
    ax.plot(offsets[:, 0], rope.rope_similarity(offsets, axes_dims[1:2]), style, color=colours[1],
            label=f"{label}: row channels alone ({axes_dims[1]})")
    ax.plot(offsets[:, 0], rope.rope_similarity(row_offsets, axes_dims), style, color="black",
            label=f"{label}: whole head ({sum(axes_dims)})")
    twin = rope.rope_similarity(torch.tensor([1.0, 0.0, 0.0]), axes_dims).item()
    ax.plot([0], [twin], "o" if label == "FLUX.1" else "s", color=colours[0], mfc="none" if style == "--" else None,
            label=f"{label}: context twin, Δ = (1, 0, 0)")
ax.set_xlabel("row offset Δ between query and key (tokens)")
ax.set_ylabel("RoPE similarity")
ax.legend(fontsize=8, ncol=2, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Text at angle 0 still sees positions.** A text query sits at (0, 0, 0) and is not turned.
# Put one and the same key vector at every cell of a 64×64 target grid: the scores differ
# from cell to cell, because the *key* is turned by its own (row, col). Only at the cell
# (0, 0), where both angles are 0, is the score the plain dot product.

# %%
q_text = torch.randn(1, sum(FULL_AXES), generator=generator)  # one text query
k_image = torch.randn(1, sum(FULL_AXES), generator=generator)  # one image key, to be placed everywhere
grid_ids = pid.latent_grid_ids(64, 64)  # [4096, 3]
text_scores = rope.rope_scores(q_text, k_image.expand(4096, -1), pid.text_ids(1), grid_ids, FULL_AXES)[0]  # [4096]
print(f"scores over the 4096 cells range from {text_scores.min().item():.2f} to {text_scores.max().item():.2f}")
print("score at cell (0, 0) equals the plain q·k:",
      bool(torch.isclose(text_scores[0], (q_text @ k_image.T)[0, 0], rtol=1e-5)))

fig, ax = plt.subplots(figsize=(4.6, 4))
image = ax.imshow(text_scores.reshape(64, 64), cmap="RdBu_r")
ax.set_title("score of one text query with the same key\nplaced at every cell of a 64×64 grid", fontsize=10)
ax.set_xlabel("col"), ax.set_ylabel("row")
fig.colorbar(image, ax=ax, shrink=0.85)
plt.show()

# %% [markdown]
# ### 6. Explore: the similarity map of one target token
#
# Pick a target token (row, col): the left map shows its RoPE similarity with every target
# token of a 32×32 grid (a 512² image), the right map with every context token. Move the
# context's first coordinate to see what the virtual-time step does, and switch heads to compare
# FLUX.1's axes with the miniature's. The computation is `rope.similarity_map`; the widget only draws.
#
# Look for this: the right map is the left map minus a constant. The offset moves nothing in
# (row, col); it adds the same turn of the virtual-time channels to every target–context pair,
# a tag that says "other image" whatever the two cells are.

# %%
HEADS = {"FLUX.1 (16, 56, 56)": FULL_AXES, MINI_LABEL: MINI_AXES}
MAP_GRID = (32, 32)


def similarity_figure(row=12, col=20, context_index=1, head="FLUX.1 (16, 56, 56)"):
    """RoPE similarity of one target query to every target key and every context key."""
    query = (pid.TARGET_INDEX, row, col)
    maps = {name: rope.similarity_map(query, *MAP_GRID, key_first_index=first_index, axes_dims=HEADS[head])
            for name, first_index in [("target", pid.TARGET_INDEX), ("context", context_index)]}  # [32, 32] each
    lowest = min(m.min().item() for m in maps.values())
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (name, similarity), first_index in zip(axes, maps.items(), [pid.TARGET_INDEX, context_index]):
        image = ax.imshow(similarity, cmap="viridis", vmin=lowest, vmax=1)
        ax.plot(col, row, "w+", ms=12)
        ax.set_title(f"{name} keys (first coordinate {first_index})\nat the query's cell: {similarity[row, col]:.4f}",
                     fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="RoPE similarity")
    fig.suptitle(f"{head}: query token (0, {row}, {col})")
    return fig


similarity_figure()
plt.show()

# %%
similarity_picture = widgets.Image(format="png")  # the figure goes into the widget, not into the cell's output


def show_similarity_in_widget(row=12, col=20, context_index=1, head="FLUX.1 (16, 56, 56)"):
    similarity_picture.value = figure_png(similarity_figure(row, col, context_index, head))


controls = widgets.interactive(show_similarity_in_widget, row=(0, MAP_GRID[0] - 1), col=(0, MAP_GRID[1] - 1),
                               context_index=(0, 4), head=list(HEADS))
widgets.VBox([controls, similarity_picture])

# %% [markdown]
# ### 7. What the context offset changes
#
# **In the tables.** A target token and its context twin at the same (row, col) differ by
# (1, 0, 0). Only the virtual-time channels turn: by ω<sub>j</sub> radians, 57° for the fastest
# pair, a fraction of a degree for the slow ones. For any query and key the score changes by
# q<sub>t</sub>·(R(ω) − I)k<sub>t</sub>, where q<sub>t</sub>, k<sub>t</sub> are the virtual-time slices: it
# depends on what the two tokens contain, not on where they are. How much the model uses that
# tag is learned: a trained model can put as much of q and k into the fast pair as it needs.

# %%
target_cells, context_cells = pid.latent_grid_ids(8, 6), pid.latent_grid_ids(8, 6, pid.CONTEXT_INDEX)
for label, axes_dims in [("full", FULL_AXES), ("mini", MINI_AXES)]:
    t_cos, t_sin = rope.rope_tables(target_cells, axes_dims)
    c_cos, c_sin = rope.rope_tables(context_cells, axes_dims)
    changed = ((t_cos != c_cos) | (t_sin != c_sin)).any(dim=0).nonzero()[:, 0]
    turn = ", ".join(f"{np.degrees(w):.2f}" for w in rope.rope_frequencies(axes_dims[0]).tolist())
    twin = rope.rope_similarity(torch.tensor([[1.0, 0.0, 0.0]]), axes_dims).item()
    print(f"{label}: channels that change {changed.min().item()}..{changed.max().item()} "
          f"({len(changed)} of {sum(axes_dims)})\n  turn per pair (degrees): {turn}\n  twin similarity {twin:.4f}")

# %% [markdown]
# **In the embedded transformer.** Its weights were trained on the flat shapes of the toy
# world only (appendix A1), so what follows measures a mechanism, not image quality. We build the inputs of one transformer
# call with the pipeline's `encode_prompt` and `prepare_latents` (a 128×96 target and a
# context of the same size, batch 2) and first check that the model computes exactly our
# tables: a forward hook on `transformer.pos_embed` records them.

# %%
inputs, n_target = rope.kontext_transformer_inputs(pipe, height=128, width=96, prompt="make the circle blue",
                                                   batch_size=2)
print({name: tuple(value.shape) for name, value in inputs.items()}, "| target tokens", n_target)
with rope.RopeTableRecorder(pipe.transformer) as recorder:
    out_offset1 = rope.run_transformer(pipe.transformer, inputs)  # [B, Lt + Lc, 64]
model_ids = torch.cat([inputs["txt_ids"], inputs["img_ids"]])  # what FluxTransformer2DModel.forward builds
kt.compare("model's cos table", rope.rope_tables(model_ids, MINI_AXES)[0], recorder.tables[0][0], atol=1e-6, rtol=0)
kt.compare("model's sin table", rope.rope_tables(model_ids, MINI_AXES)[1], recorder.tables[0][1], atol=1e-6, rtol=0)
print("output", tuple(out_offset1.shape), "= [batch, target + context tokens, 64]; the pipeline keeps the first",
      n_target)

# %% [markdown]
# **Without the offset the model cannot tell the two images apart by position.** Set the
# context's first coordinate to 0 and every context token has exactly the ids of its target
# twin. Attention is then blind to which block a token came from: swapping the contents of the
# target and context blocks just swaps the outputs. With the pipeline's ids (offset 1) it does not.

# %%
ids_offset0 = rope.with_context_index(inputs["img_ids"], n_target, 0)
swapped = rope.swap_target_and_context(inputs["hidden_states"], n_target)  # [context; target] contents
out_offset0 = rope.run_transformer(pipe.transformer, inputs, img_ids=ids_offset0)
out_offset0_swapped = rope.run_transformer(pipe.transformer, inputs, hidden_states=swapped, img_ids=ids_offset0)
kt.compare("offset 0: swap = permutation", out_offset0_swapped, rope.swap_target_and_context(out_offset0, n_target))
out_offset1_swapped = rope.run_transformer(pipe.transformer, inputs, hidden_states=swapped)
change = rope.relative_change(out_offset1_swapped, rope.swap_target_and_context(out_offset1, n_target))
print(f"offset 1: swapped output vs permuted output, relative difference {change:.2e} (not a permutation)")
change = rope.relative_change(out_offset0[:, :n_target], out_offset1[:, :n_target])
print(f"target prediction, offset 0 vs offset 1: relative change {change:.2e}")

# %% [markdown]
# How large these changes are belongs to the weights, here the miniature's, trained on a toy
# world only: read them as "not zero", not as "how much". FLUX.1-Kontext-dev learned from
# real edits how strongly to use the tag.
#
# **In the attention scores.** A recorder hooks the first double-stream block's public
# submodules (`norm_q`, `norm_k`, `norm_added_q`, …) to catch q and k just before RoPE. Our
# rotation and softmax must reproduce the block's attention output. In this first block q
# and k do not depend on the ids at all, so any difference between offset 0 and 1 is RoPE
# alone; from the second block on, the inputs differ as well.

# %%
recorded = {}
for index, ids in [(1, inputs["img_ids"]), (0, ids_offset0)]:
    with rope.AttentionRecorder(pipe.transformer, block_index=0) as attention:
        rope.run_transformer(pipe.transformer, inputs, img_ids=ids)
    recorded[index] = attention.recorded()  # q, k, v [B, S, H, Dh]; out [B, S, H*Dh]; cos, sin [S, Dh]
    r = recorded[index]
    ours = rope.attention_output(rope.attention_logits(r["q"], r["k"], r["cos"], r["sin"]), r["v"])  # [B, S, H*Dh]
    kt.compare(f"block 0 attention, offset {index}", ours, r["out"], atol=1e-5, rtol=1e-5)
print("q and k before RoPE identical for offsets 0 and 1:",
      torch.equal(recorded[0]["q"], recorded[1]["q"]) and torch.equal(recorded[0]["k"], recorded[1]["k"]))

# %% [markdown]
# The scores of one target token with every context token, head 0, for both offsets. Their
# difference is the tag from above, q<sub>t</sub>·(R(ω) − I)k<sub>t</sub> / √d on the 4 virtual-time
# channels: we compute it from those channels alone and check it against the difference.
# It varies from key to key because the keys' contents differ, not because of where they are.

# %%
n_text, rows, cols = inputs["txt_ids"].shape[0], *pid.token_grid(128, 96)
query_cell = (3, 2)  # (row, col) of one target token
query = n_text + query_cell[0] * cols + query_cell[1]  # its index in [text; target; context]
context_keys = slice(n_text + n_target, None)
logits = {offset: rope.attention_logits(rec["q"], rec["k"], rec["cos"], rec["sin"])[0, 0, query, context_keys]
          for offset, rec in recorded.items()}  # sample 0, head 0: [Lc]
logits = {offset: values.reshape(rows, cols) for offset, values in logits.items()}  # [rows, cols]
time_channels = slice(0, MINI_AXES[0])  # the 4 virtual-time channels of a head
q_t = recorded[1]["q"][0, query, 0, time_channels]  # sample 0, head 0: [4]
k_t = recorded[1]["k"][0, context_keys, 0, time_channels]  # [Lc, 4]
at_time_0, at_time_1 = torch.zeros(1, 1, device=q_t.device), torch.ones(len(k_t), 1, device=q_t.device)
turned = rope.rope_scores(q_t[None], k_t, at_time_0, at_time_1, MINI_AXES[:1])[0]  # q_t·R(ω)k_t: [Lc]
tag = (turned - k_t @ q_t) / sum(MINI_AXES) ** 0.5  # the 1/√d of attention, d = head dim
kt.compare("score difference = tag", logits[1] - logits[0], tag.reshape(rows, cols), atol=1e-5, rtol=1e-5)

panels = [(logits[1], "offset 1 (the pipeline)"), (logits[0], "offset 0"), (logits[1] - logits[0], "difference")]
fig, axes = plt.subplots(1, 3, figsize=(10, 4))
score_limit = max(logits[0].abs().max().item(), logits[1].abs().max().item())  # one scale for both offsets
for ax, (values, title), limit in zip(axes, panels, [score_limit, score_limit, None]):
    limit = limit or values.abs().max().item()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.plot(query_cell[1], query_cell[0], "k+", ms=12)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.7)
fig.suptitle(f"block 0, head 0: scores of target token {query_cell} with every context token")
plt.tight_layout()
plt.show()
print(f"largest change of a score through the offset: {(logits[1] - logits[0]).abs().max().item():.3f} "
      f"(scores span {logits[1].min().item():.2f} .. {logits[1].max().item():.2f})")

# %% [markdown]
# ## Summary
# - Every token has an id (virtual time, row, col): text (0, 0, 0), target (0, row, col),
#   context (1, row, col), stacked [text; target; context]; ours equal the pipeline's.
# - RoPE turns each channel pair of q and k by position × ω<sub>j</sub>, ω<sub>j</sub> = 10000<sup>−2j/d</sup>,
#   one 1-D RoPE per axis on its slice of the head (16 + 56 + 56 in FLUX.1); our frequencies,
#   tables and rotation equal `get_1d_rotary_pos_embed`, `FluxPosEmbed` and `apply_rotary_emb`.
# - Scores depend only on id differences; text, at angle 0, is not turned, yet its scores with
#   image tokens depend on the image token's position.
# - The first coordinate 1 marks the *context* image: it turns only the virtual-time channels
#   of the context tokens. Without it (offset 0) the model cannot tell a context token from its
#   target twin by position: swapping their contents merely swaps the outputs.

# %% [markdown]
# ## Exercises
#
# **1. RoPE with complex numbers.** Read each channel pair (a, b) as the complex number
# a + ib; turning it by φ is multiplying by e<sup>iφ</sup>. Write
# `apply_rope_complex(x, ids, axes_dims)` with `torch.view_as_complex` and `torch.polar` and
# check it against diffusers. *Hint:* the angles of all three axes side by side form an
# [S, D/2] table.

# %%
from kontext_teach.solutions import s05_position_ids_rope as s05

q = torch.randn(2, short_ids.shape[0], 3, sum(FULL_AXES), generator=generator)
kt.compare("complex RoPE", s05.apply_rope_complex(q, short_ids, FULL_AXES),
           apply_rotary_emb(q, FluxPosEmbed(10000, list(FULL_AXES))(short_ids), sequence_dim=1), atol=1e-5, rtol=1e-5)

# %% [markdown]
# **2. Several context images.** The Kontext paper places the i-th context image at virtual
# time i. Write `multi_context_ids(target_grid, context_grids)` returning the ids of the target
# followed by every context image. With one context image it must give the pipeline's ids.
# Which pairs of tokens can RoPE no longer separate if two context images share an index?

# %%
three = s05.multi_context_ids((8, 6), [(8, 6), (4, 4), (6, 10)])
print("shape", tuple(three.shape), "| first coordinates", three[:, 0].unique().tolist())
kt.compare("one context = pipeline", s05.multi_context_ids(target_grid, [context_grid]),
           torch.cat([latent_ids, image_ids]), atol=0, rtol=0)

# %% [markdown]
# **3. Move every id at once.** Predict first: if you add the same vector to every text id
# and every image id, how much does the transformer's output change? And if you move only the
# image ids? Write `output_with_shifted_ids(transformer, inputs, shift, shift_text=True)` and measure.

# %%
same = s05.output_with_shifted_ids(pipe.transformer, inputs, (3.0, 5.0, -2.0))
kt.compare("all ids + (3, 5, -2)", same, out_offset1, atol=1e-4, rtol=1e-4)
image_only = s05.output_with_shifted_ids(pipe.transformer, inputs, (0.0, 5.0, 5.0), shift_text=False)
print(f"image ids only + (0, 5, 5): relative change {rope.relative_change(image_only, out_offset1):.2e}")

# %% [markdown]
# ## References
# - J. Su et al., *RoFormer: Enhanced Transformer with Rotary Position Embedding*, 2021,
#   arXiv:2104.09864 (RoPE, the relative-position property).
# - Black Forest Labs, *FLUX.1 Kontext: Flow Matching for In-Context Image Generation and Editing
#   in Latent Space*, 2025, arXiv:2506.15742 (context tokens with a constant virtual-time offset
#   in the 3-D RoPE).
# - diffusers `models/transformers/transformer_flux.py`: `FluxPosEmbed`; `FluxAttnProcessor`
#   (RoPE on q and k after `norm_q` / `norm_k`, over [text; image]); `FluxTransformer2DModel.forward`
#   (`ids = torch.cat((txt_ids, img_ids))`, `pos_embed(ids)`).
# - diffusers `models/embeddings.py`: `get_1d_rotary_pos_embed`, `apply_rotary_emb`.
# - diffusers `pipelines/flux/pipeline_flux_kontext.py`: `FluxKontextPipeline.prepare_latents`
#   (`image_ids[..., 0] = 1`), `encode_prompt` (`text_ids = torch.zeros(..., 3)`), `__call__`
#   (`latent_ids = torch.cat([latent_ids, image_ids])`).
# - Black Forest Labs `flux`: `src/flux/sampling.py` (`prepare`, `prepare_kontext`),
#   `src/flux/math.py` (`rope`, `apply_rope`), `src/flux/modules/layers.py` (`EmbedND`).
# - EleutherAI, *Rotary Embeddings: A Relative Revolution*, 2021, blog.eleuther.ai/rotary-embeddings.
