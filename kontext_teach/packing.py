"""2x2 packing: VAE latents [B, C, h, w] <-> transformer tokens [B, (h/2)(w/2), 4C].

A space-to-depth: every 2x2 patch of latent pixels becomes one token whose 4C features are
ordered (channel, patch row, patch column), feature = 4c + 2ph + pw; tokens run over the
patch grid row by row. Unpacking is its exact inverse. No value changes: packing only moves
numbers around.

The second half counts what packing produces: tokens per image size, the sequence of a
Kontext edit (text + target + context), and what the transformer spends on it.
"""

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

from .full_size import T5_MAX_TOKENS
from .position_ids import PATCH, VAE_SCALE_FACTOR, token_grid
from .transformer import TransformerConfig
from .transformer_costs import FLOP_CATEGORIES, flops_by_category, step_flops, total_flops

REFERENCE_SIZE = (1024, 1024)  # (height, width) costs are compared with
ATTENTION = FLOP_CATEGORIES[0]  # "attention (QKᵀ, AV)" in kontext_teach.transformer_costs

# ---------------------------------------------------------------------------------------
# Packing and unpacking
# ---------------------------------------------------------------------------------------


def check_packable(height: int, width: int) -> None:
    """Raise a ValueError that says what to do when a latent cannot be cut into 2x2 patches."""
    odd = [f"{name} {size}" for name, size in (("height", height), ("width", width)) if size % PATCH]
    if not odd:
        return
    padded = (height + height % 2, width + width % 2)
    cropped = (height - height % 2, width - width % 2)
    can_crop = min(cropped) > 0
    crop = f" or crop it to {cropped[0]}x{cropped[1]}" if can_crop else ""
    example = cropped if can_crop else padded
    raise ValueError(
        f"a {height}x{width} latent cannot be cut into 2x2 patches: its {' and '.join(odd)} "
        f"{'is' if len(odd) == 1 else 'are'} odd. Pad it to {padded[0]}x{padded[1]}{crop}, or make the image sides "
        f"multiples of {VAE_SCALE_FACTOR * PATCH} ({VAE_SCALE_FACTOR} for the VAE x {PATCH} for packing), "
        f"e.g. {VAE_SCALE_FACTOR * example[0]}x{VAE_SCALE_FACTOR * example[1]} px.")


def check_latents(latents: torch.Tensor) -> None:
    """Packing needs a batch of images [B, C, h, w] with even h and w."""
    if latents.ndim != 4:
        hint = " For a single latent add the batch axis: latents[None]." if latents.ndim == 3 else ""
        raise ValueError(f"expected latents [B, C, h, w], got shape {tuple(latents.shape)}.{hint}")
    check_packable(*latents.shape[-2:])


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)*(w/2), C*4], tokens in row-major patch order."""
    check_latents(latents)
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)  # [B, C, h/2, 2, w/2, 2]
    patches = patches.permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)  # [B, L, 4C]


def check_tokens(tokens: torch.Tensor, latent_height: int, latent_width: int) -> None:
    """Unpacking needs [B, L, 4C] tokens that fill exactly an even latent_height x latent_width."""
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens [B, L, 4C], got shape {tuple(tokens.shape)}")
    check_packable(latent_height, latent_width)
    length, features = tokens.shape[1:]
    grid = (latent_height // 2, latent_width // 2)
    if length != grid[0] * grid[1]:
        raise ValueError(
            f"{length} tokens do not fill a {latent_height}x{latent_width} latent, which has "
            f"{grid[0]}x{grid[1]} = {grid[0] * grid[1]} patches. Pass the latent size the tokens were "
            f"packed from (image size // {VAE_SCALE_FACTOR}), not the image size.")
    if features % (PATCH * PATCH):
        raise ValueError(f"{features} features per token is not 4 x channels: "
                         "these tokens did not come from pack_latents")


def unpack_latents(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """[B, (h/2)*(w/2), 4C] -> [B, C, h, w]; the exact inverse of pack_latents."""
    check_tokens(tokens, latent_height, latent_width)
    batch, _, features = tokens.shape
    patches = tokens.reshape(batch, latent_height // 2, latent_width // 2, features // 4, 2, 2)  # [B, h/2, w/2, C, 2, 2]
    patches = patches.permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return patches.reshape(batch, features // 4, latent_height, latent_width)  # [B, C, h, w]


def pack_with_pixel_unshuffle(latents: torch.Tensor) -> torch.Tensor:
    """The same tokens from torch's space-to-depth.

    pixel_unshuffle keeps an image [B, 4C, h/2, w/2] whose channel 4c + 2ph + pw holds
    latent channel c at offset (ph, pw): the feature order of pack_latents. Only the layout
    differs: move the features last and read the grid row by row.
    """
    check_latents(latents)
    grid = F.pixel_unshuffle(latents, PATCH)  # [B, 4C, h/2, w/2]
    return grid.flatten(2).transpose(1, 2)  # [B, (h/2)(w/2), 4C]


def patch_embed_as_conv(latents: torch.Tensor, x_embedder: torch.nn.Linear) -> torch.Tensor:
    """x_embedder(pack_latents(latents)) computed as one 2x2, stride-2 convolution.

    The Linear's weight [D, 4C] read as kernels [D, C, 2, 2]: the (c, ph, pw) feature order is
    a conv kernel's (in channel, kernel row, kernel col) order. Packing + Linear = patchify.
    """
    check_latents(latents)
    hidden, features = x_embedder.weight.shape
    kernels = x_embedder.weight.reshape(hidden, features // 4, PATCH, PATCH)  # [D, C, 2, 2]
    embedded = F.conv2d(latents, kernels, x_embedder.bias, stride=PATCH)  # [B, D, h/2, w/2]
    return embedded.flatten(2).transpose(1, 2)  # [B, L, D]


def token_feature_sources(channels: int, latent_height: int, latent_width: int) -> torch.Tensor:
    """[L, 4C, 3]: the latent (channel, row, col) behind every feature of every token.

    Packs three index grids instead of values, so the answer is what pack_latents does.
    """
    c, y, x = torch.meshgrid(torch.arange(channels), torch.arange(latent_height), torch.arange(latent_width),
                             indexing="ij")  # each [C, h, w]
    sources = pack_latents(torch.stack([c, y, x]))  # the 3 grids as a batch: [3, L, 4C]
    return sources.permute(1, 2, 0)  # [L, 4C, 3]


# ---------------------------------------------------------------------------------------
# Token counts and cost
# ---------------------------------------------------------------------------------------


def latent_size(height: int, width: int, vae_scale_factor: int = VAE_SCALE_FACTOR) -> tuple[int, int]:
    """Latent (h, w) of a height x width px image, floored to whole 2x2 patches as prepare_latents does."""
    rows, cols = token_grid(height, width, vae_scale_factor)  # one token per 16 x 16 px
    return PATCH * rows, PATCH * cols


@dataclass(frozen=True)
class SequenceLength:
    """The joint sequence the transformer attends over: [text; target; context]."""

    text: int
    target: int
    context: int = 0  # 0: plain text-to-image (FLUX.1-dev), no context image

    @property
    def total(self) -> int:
        return self.text + self.target + self.context

    @property
    def attention_pairs(self) -> int:
        """Query-key scores per head and layer: every token attends to every token."""
        return self.total ** 2


def edit_sequence(height: int, width: int, context_size: tuple[int, int] | None = None,
                  text_tokens: int = T5_MAX_TOKENS) -> SequenceLength:
    """Sequence of an edit whose output is height x width px and whose condition image is
    context_size = (height, width) px; context_size None is text-to-image."""
    context = math.prod(token_grid(*context_size)) if context_size is not None else 0
    return SequenceLength(text=text_tokens, target=math.prod(token_grid(height, width)), context=context)


def attention_share(sequence: SequenceLength, config: TransformerConfig = TransformerConfig()) -> float:
    """Fraction of one transformer call's FLOPs spent in attention scores and sums (QK^T, AV).

    Per block and token the linear layers cost 24 D^2 FLOPs and attention 4 L D, so the share
    is about L / (L + 6 D): attention overtakes the linear layers at L = 6 D tokens.
    """
    breakdown = step_flops(config, sequence.text, sequence.target + sequence.context)
    return flops_by_category(breakdown)[ATTENTION] / total_flops(breakdown)


def preferred_resolution_table(text_tokens: int = T5_MAX_TOKENS) -> list[dict]:
    """One row per preferred Kontext resolution: its tokens, and an edit whose output has the
    size of its condition image, against the same at 1024x1024 and against text-to-image."""
    reference = edit_sequence(*REFERENCE_SIZE, context_size=REFERENCE_SIZE, text_tokens=text_tokens)
    rows = []
    for width, height in PREFERRED_KONTEXT_RESOLUTIONS:  # diffusers lists (width, height)
        edit = edit_sequence(height, width, context_size=(height, width), text_tokens=text_tokens)
        text_to_image = edit_sequence(height, width, text_tokens=text_tokens)
        rows.append(dict(width=width, height=height, latent=latent_size(height, width), tokens=edit.target,
                         sequence=edit, relative_cost=edit.attention_pairs / reference.attention_pairs,
                         cost_vs_text_to_image=edit.attention_pairs / text_to_image.attention_pairs))
    return rows


def format_resolution_table(rows: list[dict]) -> str:
    """The table as aligned text, one row per resolution."""
    lines = [f"{'W x H px':>11} {'latent h x w':>13} {'tokens':>7} {'edit seq':>9} "
             f"{'pairs (M)':>10} {'vs 1024²':>9} {'vs t2i':>7}"]
    for row in rows:
        seq = row["sequence"]
        lines.append(f"{row['width']:>5} x {row['height']:<5}{row['latent'][0]:>7} x {row['latent'][1]:<5}"
                     f"{row['tokens']:>7} {seq.total:>9} {seq.attention_pairs / 1e6:>10.1f} "
                     f"{row['relative_cost']:>8.3f}x {row['cost_vs_text_to_image']:>6.2f}x")
    return "\n".join(lines)


def describe_resolution(width: int, height: int, kontext: bool = True, text_tokens: int = T5_MAX_TOKENS) -> str:
    """What one resolution costs, as the widget shows it (output the size of the condition image)."""
    latent_height, latent_width = latent_size(height, width)
    sequence = edit_sequence(height, width, context_size=(height, width) if kontext else None,
                             text_tokens=text_tokens)
    reference = edit_sequence(*REFERENCE_SIZE, context_size=REFERENCE_SIZE if kontext else None,
                              text_tokens=text_tokens)
    kind = "Kontext edit" if kontext else "text-to-image"
    parts = f"{sequence.text} text + {sequence.target} target" + (f" + {sequence.context} context" if kontext else "")
    share = attention_share(sequence)
    return "\n".join([
        f"{width} x {height} px -> latent 16 x {latent_height} x {latent_width} "
        f"-> {latent_height // 2} x {latent_width // 2} = {sequence.target} tokens of 64 features",
        f"{kind} sequence: {parts} = {sequence.total} tokens",
        f"attention pairs per head and layer: {sequence.attention_pairs / 1e6:.1f} M "
        f"= {sequence.attention_pairs / reference.attention_pairs:.3f} x a 1024 x 1024 {kind}",
        f"share of the full-size transformer's FLOPs spent in attention: {100 * share:.0f} %",
    ])


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------

OFFSET_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")  # (ph, pw) = (0,0) (0,1) (1,0) (1,1)


def _token_colours(num_tokens: int) -> list:
    palette = plt.get_cmap("Pastel1" if num_tokens <= 9 else "tab20")
    return [palette(i % palette.N) for i in range(num_tokens)]


def draw_packing(channels: int = 16, latent_height: int = 4, latent_width: int = 6, token: int = 4):
    """Three panels computed from token_feature_sources: the latent cut into 2x2 patches,
    the token sequence, and the 4C features of one token as (channel) x (pixel in patch)."""
    sources = token_feature_sources(channels, latent_height, latent_width)  # [L, 4C, 3]
    num_tokens, grid_width = sources.shape[0], latent_width // 2
    colours = _token_colours(num_tokens)
    fig = plt.figure(figsize=(12, 6.2))
    ax_latent = fig.add_axes([0.02, 0.30, 0.50, 0.62])
    ax_sequence = fig.add_axes([0.02, 0.05, 0.50, 0.12])
    ax_token = fig.add_axes([0.60, 0.12, 0.36, 0.80])

    # The latent (one channel: every channel is cut the same way)
    token_of_pixel = {}
    for t in range(num_tokens):
        for c, y, x in sources[t].tolist():
            token_of_pixel[(y, x)] = t
    pixels_of_token = {(y, x): (y % 2) * 2 + x % 2 for _, y, x in sources[token].tolist()}
    for (y, x), t in token_of_pixel.items():
        face = OFFSET_COLOURS[pixels_of_token[(y, x)]] if t == token else colours[t]
        ax_latent.add_patch(plt.Rectangle((x, y), 1, 1, facecolor=face, edgecolor="white", lw=1))
        ax_latent.text(x + 0.5, y + 0.5, f"({y},{x})", ha="center", va="center", fontsize=9,
                       color="white" if t == token else "#333333")
    for t in range(num_tokens):
        row, col = divmod(t, grid_width)
        ax_latent.add_patch(plt.Rectangle((2 * col, 2 * row), 2, 2, fill=False, edgecolor="#222222", lw=2.5))
        ax_latent.text(2 * col + 1, 2 * row + 1, f"t{t}", ha="center", va="center", fontsize=12,
                       fontweight="bold", color="#222222",
                       bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax_latent.set_xlim(0, latent_width)
    ax_latent.set_ylim(latent_height, 0)
    ax_latent.set_aspect("equal")
    ax_latent.axis("off")
    ax_latent.set_title(f"latent [C={channels}, h={latent_height}, w={latent_width}]: one channel shown, "
                        "pixels (row, col)\nthick squares = 2x2 patches = tokens", fontsize=10)

    # The token sequence, row-major over the patch grid
    for t in range(num_tokens):
        ax_sequence.add_patch(plt.Rectangle((t, 0), 1, 1, facecolor=colours[t], edgecolor="#222222",
                                            lw=2.5 if t == token else 1))
        ax_sequence.text(t + 0.5, 0.5, f"t{t}\n{divmod(t, grid_width)}", ha="center", va="center", fontsize=8)
    ax_sequence.set_xlim(0, num_tokens)
    ax_sequence.set_ylim(0, 1)
    ax_sequence.axis("off")
    ax_sequence.set_title(f"token sequence [L={num_tokens}]: patches read row by row, "
                          "(patch row, patch col) below each token", fontsize=10)

    # One token's features: row = channel c, column = pixel (ph, pw) in the patch
    for feature, (c, y, x) in enumerate(sources[token].tolist()):
        offset = (y % 2) * 2 + x % 2
        ax_token.add_patch(plt.Rectangle((offset, c), 1, 1, facecolor=OFFSET_COLOURS[offset], edgecolor="white"))
        ax_token.text(offset + 0.5, c + 0.5, f"{feature}", ha="center", va="center", fontsize=8.5,
                      color="white")
    offsets = [(ph, pw) for ph in range(2) for pw in range(2)]
    ax_token.set_xticks([i + 0.5 for i in range(4)],
                        [f"(ph,pw)=\n{o}\npixel {tuple(sources[token, i, 1:].tolist())}" for i, o in enumerate(offsets)],
                        fontsize=8)
    ax_token.set_yticks([c + 0.5 for c in range(channels)], [f"c={c}" for c in range(channels)], fontsize=8)
    ax_token.tick_params(length=0)
    ax_token.set_xlim(0, 4)
    ax_token.set_ylim(channels, 0)
    for side in ax_token.spines.values():
        side.set_visible(False)
    ax_token.set_title(f"token t{token}: its {4 * channels} features\nfeature = 4·c + 2·ph + pw", fontsize=10)
    return fig


def draw_feature_maps(latent: torch.Tensor, channel_names: list[str] | None = None):
    """Pack one latent [C, h, w] and show every feature across all tokens, on the token grid:
    row c, column (ph, pw). Each is channel c sampled at one of the four pixels of each patch."""
    channels, height, width = latent.shape
    tokens = pack_latents(latent[None])[0]  # [L, 4C]
    names = channel_names or [f"c={c}" for c in range(channels)]
    fig, axes = plt.subplots(channels, 5, figsize=(11, 2.1 * channels),
                             gridspec_kw=dict(width_ratios=(2, 1, 1, 1, 1)))
    axes = axes.reshape(channels, 5)
    for c in range(channels):
        axes[c, 0].imshow(latent[c], cmap="gray", vmin=latent.min(), vmax=latent.max())
        axes[c, 0].set_title(f"{names[c]}: {height} x {width}", fontsize=9)
        for offset in range(4):
            feature = 4 * c + offset
            grid = tokens[:, feature].reshape(height // 2, width // 2)  # [h/2, w/2]
            axes[c, 1 + offset].imshow(grid, cmap="gray", vmin=latent.min(), vmax=latent.max())
            axes[c, 1 + offset].set_title(f"feature {feature}\n(ph,pw)={divmod(offset, 2)}", fontsize=9,
                                          color=OFFSET_COLOURS[offset])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"left: the input channels; right: the {4 * channels} token features, each shown over "
                 f"the {height // 2} x {width // 2} token grid", fontsize=10)
    fig.tight_layout()
    return fig


def draw_sequence_costs(rows: list[dict]):
    """Left: the edit sequence of every preferred resolution, stacked text / target / context.
    Right: attention pairs of that edit and of text-to-image at the same size."""
    labels = [f"{r['width']}x{r['height']}" for r in rows]
    fig, (ax_tokens, ax_cost) = plt.subplots(1, 2, figsize=(12, 5.5), sharey=True,
                                             gridspec_kw=dict(width_ratios=(3, 2)))
    left = [0] * len(rows)
    for part, colour in (("text", "#fdb863"), ("target", "#5e3c99"), ("context", "#b2abd2")):
        sizes = [getattr(r["sequence"], part) for r in rows]
        ax_tokens.barh(labels, sizes, left=left, color=colour, label=part)
        left = [a + b for a, b in zip(left, sizes)]
    ax_tokens.invert_yaxis()
    ax_tokens.set_xlabel("tokens in the joint sequence")
    ax_tokens.set_title("Kontext edit, output = condition size")
    ax_tokens.legend(loc="lower right", fontsize=9, framealpha=1)
    edit = [r["sequence"].attention_pairs / 1e6 for r in rows]
    text_to_image = [e / r["cost_vs_text_to_image"] for e, r in zip(edit, rows)]
    ax_cost.plot(edit, labels, "o", color="#5e3c99", label="Kontext edit")
    ax_cost.plot(text_to_image, labels, "s", color="#fdb863", label="text-to-image, same size")
    ax_cost.set_xlim(0, 1.1 * max(edit))
    ax_cost.grid(axis="x", alpha=0.3)
    ax_cost.set_xlabel("attention pairs per head and layer (millions)")
    ax_cost.set_title("attention pairs, with and without context")
    ax_cost.legend(loc="center left", fontsize=9, framealpha=1)
    fig.suptitle("The 17 preferred Kontext resolutions (width x height px)", fontsize=12)
    fig.tight_layout()
    return fig


def draw_flops(sides: list[int], config: TransformerConfig = TransformerConfig()):
    """FLOPs of one transformer call for square outputs, linear layers vs attention, and the
    share of attention, for Kontext edits (context = output size) and text-to-image."""
    fig, (ax_flops, ax_share) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kontext, style in ((True, "-"), (False, ":")):
        sequences = [edit_sequence(s, s, context_size=(s, s) if kontext else None) for s in sides]
        flops = [flops_by_category(step_flops(config, q.text, q.target + q.context)) for q in sequences]
        linear = [(f["q/k/v/out projections"] + f["MLP"]) / 1e12 for f in flops]
        name = "Kontext edit" if kontext else "text-to-image"
        ax_flops.plot(sides, linear, style, color="#2b83ba", label=f"linear layers, {name}")
        ax_flops.plot(sides, [f[ATTENTION] / 1e12 for f in flops], style, color="#d7191c", label=f"attention, {name}")
        ax_share.plot(sides, [100 * attention_share(q, config) for q in sequences], style, color="#5e3c99", label=name)
    for ax in (ax_flops, ax_share):
        ax.axvline(1024, color="#999999", lw=1, ls="--")
        ax.set_xlabel("output side (px), square")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    ax_flops.set_ylabel("TFLOPs per transformer call")
    ax_flops.set_title("linear layers grow like L, attention like L²")
    ax_share.set_ylabel("attention share of the FLOPs (%)")
    ax_share.axhline(50, color="#999999", lw=1)
    ax_share.set_ylim(0, 100)
    ax_share.set_title(f"attention overtakes the linear layers at L = 6 D = {6 * config.dim} tokens")
    fig.tight_layout()
    return fig
