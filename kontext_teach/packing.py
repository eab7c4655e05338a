"""2x2 packing: VAE latents [B, C, h, w] <-> transformer tokens [B, (h/2)(w/2), 4C].

A space-to-depth: every 2x2 patch of latent pixels becomes one token whose features are
ordered (channel, patch row, patch column). Unpacking is its exact inverse.
"""

import torch


def check_packable(height: int, width: int) -> None:
    if height % 2 or width % 2:
        raise ValueError(f"latent size {height}x{width} must be even to pack 2x2 patches; "
                         "image sides must be multiples of 16 (8 for the VAE x 2 for packing)")


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)*(w/2), C*4], tokens in row-major patch order."""
    batch, channels, height, width = latents.shape
    check_packable(height, width)
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)  # [B, C, h/2, 2, w/2, 2]
    patches = patches.permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)  # [B, L, 4C]


def unpack_latents(tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """[B, (h/2)*(w/2), 4C] -> [B, C, h, w]; the exact inverse of pack_latents."""
    batch, length, features = tokens.shape
    check_packable(latent_height, latent_width)
    if length != (latent_height // 2) * (latent_width // 2) or features % 4:
        raise ValueError(f"{length} tokens of {features} features do not unpack to a "
                         f"{latent_height}x{latent_width} latent")
    patches = tokens.reshape(batch, latent_height // 2, latent_width // 2, features // 4, 2, 2)  # [B, h/2, w/2, C, 2, 2]
    patches = patches.permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return patches.reshape(batch, features // 4, latent_height, latent_width)  # [B, C, h, w]
