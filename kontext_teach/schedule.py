"""The sampling schedule: linear sigmas, a shift mu from the number of target tokens, and
FLUX's exponential time shift."""

import math

import numpy as np
import torch


def base_sigmas(num_steps: int) -> np.ndarray:
    """linspace(1, 1/N, N) in float32: the unshifted noise levels, one per step."""
    return np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)


def shift_mu(num_target_tokens: int, base_tokens: int = 256, max_tokens: int = 4096,
             base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu, linear in the number of target tokens: base_shift at base_tokens, max_shift at max_tokens."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (num_target_tokens - base_tokens)


def time_shift(mu: float, sigmas: torch.Tensor | np.ndarray, exponent: float = 1.0):
    """exp(mu) / (exp(mu) + (1/sigma - 1)**exponent): pushes sigmas towards 1 (more noise)."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** exponent)


def shifted_sigmas(num_steps: int, num_target_tokens: int, **shift_config) -> torch.Tensor:
    """The N shifted sigmas followed by a final 0: [N + 1], as the scheduler keeps them."""
    mu = shift_mu(num_target_tokens, **shift_config)
    sigmas = torch.from_numpy(time_shift(mu, base_sigmas(num_steps))).float()
    return torch.cat([sigmas, torch.zeros(1)])


def timesteps_from_sigmas(sigmas: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The timesteps the transformer is given (before the pipeline divides them by 1000)."""
    return sigmas[:-1] * num_train_timesteps
