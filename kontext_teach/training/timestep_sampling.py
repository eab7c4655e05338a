"""Where training puts its noise levels: the timestep densities and loss weightings of
rectified-flow training (SD3 paper, section 3.1), as diffusers' ``training_utils`` implements
them (``compute_density_for_timestep_sampling``, ``compute_loss_weighting_for_sd3``) and the
Kontext LoRA script ``train_dreambooth_lora_flux_kontext.py`` uses them.

A training step draws u in [0, 1) from a density, turns it into a noise level sigma on the
scheduler's grid of 1000 training sigmas, noises the target latent
``x_sigma = (1 - sigma) * x0 + sigma * noise`` and regresses ``noise - x0``, optionally
weighting the loss per sample.
"""

import math

import torch

DENSITIES = ("uniform", "logit_normal", "mode")
# diffusers calls the uniform density "none" (and falls back to it for any unknown name).
DIFFUSERS_DENSITY_NAMES = {"uniform": "none", "logit_normal": "logit_normal", "mode": "mode"}
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")
MODE_SCALE_MAX = 2 / (math.pi - 2)  # above it the mode map is no longer monotonic (SD3 paper, section 3.1)
MODE_SCALE_MIN = -1.0  # below it the mode map leaves [0, 1]


def _check_density(density: str) -> None:
    if density not in DENSITIES:
        raise ValueError(f"unknown density {density!r}; use one of {DENSITIES} (diffusers silently falls back "
                         "to uniform for names it does not know, e.g. 'logit-normal' with a hyphen)")


def _check_mode_scale(mode_scale: float) -> None:
    if not MODE_SCALE_MIN <= mode_scale <= MODE_SCALE_MAX:
        raise ValueError(f"mode_scale must lie in [{MODE_SCALE_MIN}, {MODE_SCALE_MAX:.4f}] (= 2/(pi-2)) for the "
                         f"mode map to be a monotonic map of [0, 1] onto itself; got {mode_scale} "
                         "(diffusers' default is 1.29)")


def _check_logit_std(logit_std: float) -> None:
    if not logit_std > 0:
        raise ValueError(f"logit_std must be > 0 (diffusers' default is 1.0); got {logit_std}")


def mode_map(u: torch.Tensor, mode_scale: float) -> torch.Tensor:
    """f(u) = 1 - u - s * (cos(pi u / 2)^2 - 1 + u): maps uniform u to the "mode" density; f(0) = 1, f(1) = 0."""
    return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)


def sample_u(density: str, batch_size: int, *, logit_mean: float = 0.0, logit_std: float = 1.0,
             mode_scale: float = 1.29, generator: torch.Generator | None = None,
             device: str | torch.device = "cpu") -> torch.Tensor:
    """batch_size draws of u in [0, 1): [B]. Same random calls as diffusers, so the same generator
    state gives the same samples."""
    _check_density(density)
    if density == "logit_normal":
        _check_logit_std(logit_std)
        normal = torch.normal(mean=logit_mean, std=logit_std, size=(batch_size,), device=device, generator=generator)
        return torch.sigmoid(normal)  # logit(u) ~ N(mean, std^2)
    uniform = torch.rand(size=(batch_size,), device=device, generator=generator)
    if density == "mode":
        _check_mode_scale(mode_scale)
        return mode_map(uniform, mode_scale)
    return uniform


def _inverse_mode_map(x: torch.Tensor, mode_scale: float, iterations: int = 52) -> torch.Tensor:
    """u with mode_map(u) = x, by bisection (mode_map decreases from 1 to 0 on [0, 1])."""
    low, high = torch.zeros_like(x), torch.ones_like(x)
    for _ in range(iterations):
        middle = (low + high) / 2
        right = mode_map(middle, mode_scale) > x  # the root lies to the right of middle
        low, high = torch.where(right, middle, low), torch.where(right, high, middle)
    return (low + high) / 2


def density_pdf(density: str, x: torch.Tensor, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                mode_scale: float = 1.29) -> torch.Tensor:
    """The probability density of u at x in [0, 1], in float64."""
    _check_density(density)
    x = torch.as_tensor(x, dtype=torch.float64)
    if density == "uniform":
        return torch.ones_like(x)
    if density == "logit_normal":
        _check_logit_std(logit_std)
        inside = (x > 0) & (x < 1)
        x = torch.where(inside, x, 0.5)  # the density tends to 0 at both ends
        z = (torch.logit(x) - logit_mean) / logit_std
        return torch.where(inside, torch.exp(-z ** 2 / 2) / (logit_std * math.sqrt(2 * math.pi) * x * (1 - x)), 0.0)
    _check_mode_scale(mode_scale)
    u = _inverse_mode_map(x, mode_scale)
    slope = -1 - mode_scale + mode_scale * math.pi / 2 * torch.sin(math.pi * u)  # f'(u) <= 0
    return 1 / slope.abs()


def density_cdf(density: str, x: torch.Tensor, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                mode_scale: float = 1.29) -> torch.Tensor:
    """P(u <= x) for x in [0, 1], in float64."""
    _check_density(density)
    x = torch.as_tensor(x, dtype=torch.float64)
    if density == "uniform":
        return x.clamp(0, 1)
    if density == "logit_normal":
        _check_logit_std(logit_std)
        return torch.special.ndtr((torch.logit(x) - logit_mean) / logit_std)  # logit(0) = -inf -> 0
    _check_mode_scale(mode_scale)
    return 1 - _inverse_mode_map(x, mode_scale)  # mode_map decreases: P(f(U) <= x) = P(U >= f^-1(x))


def density_quantile(density: str, q: torch.Tensor, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                     mode_scale: float = 1.29) -> torch.Tensor:
    """The q-quantile of u (the x with P(u <= x) = q), in float64."""
    _check_density(density)
    q = torch.as_tensor(q, dtype=torch.float64)
    if density == "uniform":
        return q
    if density == "logit_normal":
        _check_logit_std(logit_std)
        return torch.sigmoid(logit_mean + logit_std * torch.special.ndtri(q))
    _check_mode_scale(mode_scale)
    return mode_map(1 - q, mode_scale)  # the inverse of density_cdf


def sigmas_from_u(u: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The training sigma of each u, as the Kontext LoRA script picks it: [B] float32.

    The script takes index floor(u * 1000) into the scheduler's 1000 training sigmas, which run
    down from 1 to 1/1000 and are not resolution-shifted: sigma = (1000 - index) / 1000.
    """
    if (u < 0).any() or (u >= 1).any():
        raise ValueError("u must lie in [0, 1): u = 1 would index past the scheduler's last training sigma")
    index = (u * num_train_timesteps).long()  # [B]
    return (num_train_timesteps - index).float() / num_train_timesteps


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) * x0 + sigma * noise, one sigma per sample: x0, noise [B, ...], sigmas [B]."""
    if x0.shape != noise.shape or sigmas.shape != x0.shape[:1]:
        raise ValueError(f"need x0 and noise of one shape [B, ...] and one sigma per sample [B]; got "
                         f"{tuple(x0.shape)}, {tuple(noise.shape)}, {tuple(sigmas.shape)}")
    sigmas = sigmas.reshape(-1, *([1] * (x0.ndim - 1)))  # [B, 1, ...]
    return (1.0 - sigmas) * x0 + sigmas * noise


def loss_weighting(weighting: str, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weights, as compute_loss_weighting_for_sd3: "none" -> 1,
    "sigma_sqrt" -> sigma^-2, "cosmap" -> 2 / (pi (1 - 2 sigma + 2 sigma^2))."""
    if weighting == "sigma_sqrt":
        return (sigmas ** -2.0).float()
    if weighting == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas ** 2))
    if weighting == "none":
        return torch.ones_like(sigmas)
    raise ValueError(f"unknown loss weighting {weighting!r}; use one of {LOSS_WEIGHTINGS} ('logit_normal' and "
                     "'mode' change the sampling density instead and weight the loss with 1: use 'none')")
