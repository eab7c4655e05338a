"""Solutions to the exercises of 08_sampling_loop."""

import torch

from ..schedule import euler_step


def predicted_clean_latents(latents: torch.Tensor, velocity: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exercise 1: the model's guess of the finished latents at noise level sigma.

    x_sigma = (1 - sigma) x0 + sigma n and v = n - x0 give x0 = x_sigma - sigma v: one Euler
    step all the way to sigma = 0.
    """
    return euler_step(latents, velocity, sigma, 0.0)


def transformer_calls(num_inference_steps: int, true_cfg: bool) -> int:
    """Exercise 2: transformer forward passes per image: one per step, two with true CFG."""
    return num_inference_steps * (2 if true_cfg else 1)


def heun_step(velocity_at, latents: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """Exercise 3: a second-order (Heun) step: average the velocity at both ends of the step.

    velocity_at(latents, sigma) -> v. Costs two transformer calls per step (one at the end, when
    sigma_next = 0, where Heun falls back to Euler as the scheduler's Heun variant does).
    """
    v = velocity_at(latents, sigma)
    euler = euler_step(latents, v, sigma, sigma_next)
    if sigma_next == 0:
        return euler
    v_next = velocity_at(euler, sigma_next)
    return euler_step(latents, (v + v_next) / 2, sigma, sigma_next)
