"""Solutions to the exercises of notebook 04_packing."""

import math

import torch
import torch.nn.functional as F

from ..anatomy.full_size import T5_MAX_TOKENS
from ..packing import PATCH, VAE_SCALE_FACTOR, check_latents, check_packable, check_tokens


def pack_with_unfold(latents: torch.Tensor) -> torch.Tensor:
    """Exercise 1: pack with F.unfold, no view/permute.

    unfold with a 2x2 kernel and stride 2 cuts out every patch as one column, its values in
    (channel, kernel row, kernel col) order, the columns row by row: [B, 4C, L].
    """
    check_latents(latents)
    columns = F.unfold(latents, kernel_size=PATCH, stride=PATCH)  # [B, 4C, L]
    return columns.transpose(1, 2)  # [B, L, 4C]


def unpack_with_fold(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Exercise 1, the inverse: F.fold puts every column back in its (non-overlapping) patch."""
    check_tokens(tokens, latent_height, latent_width)
    columns = tokens.transpose(1, 2)  # [B, 4C, L]
    return F.fold(columns, output_size=(latent_height, latent_width), kernel_size=PATCH, stride=PATCH)  # [B, C, h, w]


def token_and_feature(channel: int, row: int, col: int, latent_width: int) -> tuple[int, int]:
    """Exercise 2: where latent value (channel, row, col) lands: (token index, feature index)."""
    check_packable(PATCH, latent_width)
    if min(channel, row, col) < 0 or col >= latent_width:
        raise ValueError(f"(channel {channel}, row {row}, col {col}) is not a pixel of a latent "
                         f"{latent_width} wide: indices start at 0 and col < width")
    token = (row // PATCH) * (latent_width // PATCH) + col // PATCH  # patches are read row by row
    feature = PATCH * PATCH * channel + PATCH * (row % PATCH) + col % PATCH  # (c, ph, pw)
    return token, feature


def largest_square_side(max_tokens: int, kontext: bool = True, text_tokens: int = T5_MAX_TOKENS) -> int:
    """Exercise 3: the largest square output side (px, a multiple of 16) whose sequence
    (text + target, + an equal-size context for Kontext) is at most max_tokens."""
    images = 2 if kontext else 1
    if max_tokens < text_tokens + images:
        raise ValueError(f"{max_tokens} tokens leave no room for an image next to {text_tokens} text tokens")
    tokens_per_side = math.isqrt((max_tokens - text_tokens) // images)  # n with images * n^2 <= budget
    return tokens_per_side * VAE_SCALE_FACTOR * PATCH
