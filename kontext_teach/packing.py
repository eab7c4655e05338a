"""2x2 packing: VAE latents [B, C, h, w] <-> transformer tokens [B, (h/2)(w/2), 4C].

A space-to-depth: every 2x2 patch of latent pixels becomes one token whose 4C features are
ordered (channel, patch row, patch column), feature = 4c + 2ph + pw; tokens run over the
patch grid row by row. Unpacking is its exact inverse. No value changes: packing only moves
numbers around.

The second half counts what packing produces: tokens per image size, the sequence of a
Kontext edit (text + target + context), and what the transformer spends on it.
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

from .full_size import T5_MAX_TOKENS
from .full_size import TRANSFORMER as FULL_SIZE_TRANSFORMER

PATCH = 2  # latent pixels per token side
VAE_SCALE_FACTOR = 8  # image pixels per latent pixel side
REFERENCE_SIZE = (1024, 1024)  # (height, width) costs are compared with

# ---------------------------------------------------------------------------------------
# Packing and unpacking
# ---------------------------------------------------------------------------------------


def check_packable(height: int, width: int) -> None:
    """Raise a ValueError that says what to do when a latent cannot be cut into 2x2 patches."""
    odd = [f"{name} {size}" for name, size in (("height", height), ("width", width)) if size % PATCH]
    if not odd:
        return
    padded = f"{height + height % 2}x{width + width % 2}"
    cropped = f"{height - height % 2}x{width - width % 2}"
    crop = f" or crop it to {cropped}" if height > 1 and width > 1 else ""
    raise ValueError(
        f"a {height}x{width} latent cannot be cut into 2x2 patches: its {' and '.join(odd)} "
        f"{'is' if len(odd) == 1 else 'are'} odd. Pad it to {padded}{crop}, or make the image sides "
        f"multiples of {VAE_SCALE_FACTOR * PATCH} ({VAE_SCALE_FACTOR} for the VAE x {PATCH} for packing), "
        f"e.g. {VAE_SCALE_FACTOR * (height - height % 2)}x{VAE_SCALE_FACTOR * (width - width % 2)} px.")


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
    """Latent (h, w) of an image, floored to whole 2x2 patches as prepare_latents does."""
    multiple = vae_scale_factor * PATCH  # 16 image pixels per token side
    return PATCH * (height // multiple), PATCH * (width // multiple)


def num_image_tokens(height: int, width: int, vae_scale_factor: int = VAE_SCALE_FACTOR) -> int:
    """Tokens of an image: (height // 16) * (width // 16)."""
    latent_height, latent_width = latent_size(height, width, vae_scale_factor)
    return (latent_height // PATCH) * (latent_width // PATCH)


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
    context = num_image_tokens(*context_size) if context_size is not None else 0
    return SequenceLength(text=text_tokens, target=num_image_tokens(height, width), context=context)


def transformer_flops(num_tokens: int, config: dict = FULL_SIZE_TRANSFORMER) -> dict[str, int]:
    """FLOPs (a multiply-add counts 2) of the transformer blocks on a sequence of num_tokens.

    linear:    every token meets 12 D^2 weights per block (q, k, v, out: 4 D^2; MLP D -> 4D -> D:
               8 D^2), so 24 D^2 L FLOPs per block: linear in L.
    attention: scores Q K^T and the weighted sum A V, each L^2 D multiply-adds per block:
               4 L^2 D FLOPs, quadratic in L.
    Embedders, AdaLN (one vector per sample) and the output layer are left out: they are small.
    """
    hidden = config["num_attention_heads"] * config["attention_head_dim"]  # D
    blocks = config["num_layers"] + config["num_single_layers"]
    return dict(linear=24 * hidden ** 2 * num_tokens * blocks,
                attention=4 * num_tokens ** 2 * hidden * blocks)


def attention_share(num_tokens: int, config: dict = FULL_SIZE_TRANSFORMER) -> float:
    """Fraction of the blocks' FLOPs spent in attention: L / (L + 6 D)."""
    flops = transformer_flops(num_tokens, config)
    return flops["attention"] / (flops["attention"] + flops["linear"])


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
    share = attention_share(sequence.total)
    return "\n".join([
        f"{width} x {height} px -> latent 16 x {latent_height} x {latent_width} "
        f"-> {latent_height // 2} x {latent_width // 2} = {sequence.target} tokens of 64 features",
        f"{kind} sequence: {parts} = {sequence.total} tokens",
        f"attention pairs per head and layer: {sequence.attention_pairs / 1e6:.1f} M "
        f"= {sequence.attention_pairs / reference.attention_pairs:.3f} x a 1024 x 1024 {kind}",
        f"share of the full-size blocks' FLOPs spent in attention: {100 * share:.0f} %",
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
    ax_token = fig.add_axes([0.60, 0.05, 0.36, 0.87])

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


def draw_sequence_costs(rows: list[dict]):
    """Left: the edit sequence of every preferred resolution, stacked text / target / context.
    Right: attention pairs relative to a 1024x1024 edit."""
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
    ax_tokens.legend(loc="lower right", fontsize=9)
    ax_cost.barh(labels, [r["relative_cost"] for r in rows], color="#5e3c99")
    ax_cost.axvline(1, color="#333333", lw=1, ls="--")
    ax_cost.set_xlim(0.9, 1.05)
    ax_cost.set_xlabel("attention pairs / those of a 1024x1024 edit")
    ax_cost.set_title("relative attention cost")
    fig.suptitle("The 17 preferred Kontext resolutions (width x height px)", fontsize=12)
    fig.tight_layout()
    return fig
