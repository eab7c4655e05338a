"""Solutions to the exercises of notebook 03_vae_latents."""

import torch

from ..vae_latents import encode_image_latents, latent_shape


def compression_ratio(vae_config, height: int, width: int) -> float:
    """Exercise 1: how many numbers the image holds per number of its latent.

    3 * H * W pixels values against C * (H/f) * (W/f) latent values: 3 * f**2 / C, 12 for FLUX.
    """
    _, channels, latent_height, latent_width = latent_shape(vae_config, 1, height, width)
    return (3 * height * width) / (channels * latent_height * latent_width)


def estimate_shift_and_scale(raw_latents: torch.Tensor) -> tuple[float, float]:
    """Exercise 2: the (shift_factor, scaling_factor) that would make these unscaled latents
    zero-mean and unit-spread: shift = mean, scale = 1 / std, over every element."""
    if raw_latents.numel() < 2:
        raise ValueError("need at least two latent values to estimate a spread")
    values = raw_latents.detach().double()
    return values.mean().item(), 1.0 / values.std().item()


def encode_in_chunks(vae, images: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Exercise 3: encode a large batch chunk by chunk (as one caches latents for training),
    giving the same latents as one call on the whole batch: [B, C, H/f, W/f]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return torch.cat([encode_image_latents(vae, chunk) for chunk in images.split(chunk_size)], dim=0)
