"""2x2 packing: VAE latents [B, C, h, w] <-> transformer tokens [B, (h/2)(w/2), 4C].

A space-to-depth: every 2x2 patch of latent pixels becomes one token whose 4C features are
ordered (channel, patch row, patch column), feature = 4c + 2ph + pw; tokens run over the
patch grid row by row. Unpacking is its exact inverse. No value changes: packing only moves
numbers around.

What the packed sequence costs the transformer (tokens per preferred resolution, attention
pairs, FLOPs) is counted in ``kontext_teach.anatomy.sequence_costs``.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from .position_ids import PATCH, VAE_SCALE_FACTOR, token_grid

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
# Token counts
# ---------------------------------------------------------------------------------------


def latent_size(height: int, width: int, vae_scale_factor: int = VAE_SCALE_FACTOR) -> tuple[int, int]:
    """Latent (h, w) of a height x width px image, floored to whole 2x2 patches as prepare_latents does."""
    rows, cols = token_grid(height, width, vae_scale_factor)  # one token per 16 x 16 px
    return PATCH * rows, PATCH * cols


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
