"""Solutions to the exercises of 06_shift_schedule."""

import math

import torch

from ..schedule import shift_mu, target_tokens


def inverse_time_shift(mu: float, shifted: torch.Tensor, exponent: float = 1.0) -> torch.Tensor:
    """Exercise 1: the sigma that time_shift(mu, sigma, exponent) maps to ``shifted``.

    From s = e^mu / (e^mu + (1/sigma - 1)^a): (1/sigma - 1)^a = e^mu (1/s - 1), so
    sigma = 1 / (1 + (e^mu (1/s - 1))^(1/a)). With a = 1 it is sigmoid(logit(s) - mu).
    """
    return 1 / (1 + (math.exp(mu) * (1 / shifted - 1)) ** (1 / exponent))


def bfl_schedule(num_steps: int, image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15) -> torch.Tensor:
    """Exercise 2: BFL's ``get_schedule`` (src/flux/sampling.py): N + 1 shifted times from 1 to 0.

    linspace(1, 0, N + 1) holds the same points as diffusers' linspace(1, 1/N, N) plus the final 0;
    at t = 0, 1/t - 1 is inf and the shift gives exactly 0.
    """
    slope = (max_shift - base_shift) / (4096 - 256)  # get_lin_function(x1=256, y1, x2=4096, y2)
    mu = slope * image_seq_len + (base_shift - slope * 256)
    times = torch.linspace(1, 0, num_steps + 1)  # [N + 1]
    return math.exp(mu) / (math.exp(mu) + (1 / times - 1))


def largest_step(schedule: torch.Tensor) -> float:
    """Exercise 2: the largest |dt| = sigma - sigma_next of a schedule that ends with 0."""
    return (schedule[:-1] - schedule[1:]).max().item()


def shift_for_size(height: int, width: int) -> float:
    """Exercise 3: the static shift factor e^mu the pipeline uses for a height x width output."""
    return math.exp(shift_mu(target_tokens(height, width)))


def smallest_square_side_with_shift(min_shift: float) -> int:
    """Exercise 3: the smallest square side (a multiple of 16) whose shift e^mu reaches min_shift.

    mu is linear in the tokens and not clamped: solve mu(tokens) = log(min_shift) for the tokens,
    then take the smallest side s with (s / 16)^2 >= tokens.
    """
    if min_shift <= 0:
        raise ValueError(f"a shift factor e^mu is positive; got {min_shift}")
    slope = (1.15 - 0.5) / (4096 - 256)
    tokens = 256 + (math.log(min_shift) - 0.5) / slope
    side = 16 * max(1, math.ceil(math.sqrt(max(tokens, 1))))
    while side > 16 and shift_for_size(side - 16, side - 16) >= min_shift:  # guard against rounding
        side -= 16
    while shift_for_size(side, side) < min_shift:
        side += 16
    return side
