"""The sampling schedule: linear sigmas, a shift mu from the number of target tokens,
FLUX's exponential time shift, the timesteps, and the Euler step that walks along them.

Rebuilds step 5 of ``FluxKontextPipeline.__call__`` ("Prepare timesteps": ``calculate_shift``
and ``FlowMatchEulerDiscreteScheduler.set_timesteps``) and ``FlowMatchEulerDiscreteScheduler.step``.
``schedule_for_size`` / ``show_schedule`` go from an image size to the whole schedule;
``trace_sampling`` records what a real pipeline run did at each step, to check all of it.
"""

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from .position_ids import PATCH, VAE_SCALE_FACTOR, token_grid
from .preprocessing import output_size


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (FLUX uses 28 in diffusers, 30 in BFL's code); "
                         f"got {num_steps!r}")


def base_sigmas(num_steps: int) -> np.ndarray:
    """linspace(1, 1/N, N) in float32: the unshifted noise levels, one per step."""
    _check_num_steps(num_steps)
    return np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)


def shift_mu(num_target_tokens: int, base_tokens: int = 256, max_tokens: int = 4096,
             base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu, linear in the number of target tokens: base_shift at base_tokens, max_shift at max_tokens.

    Not clamped: more than max_tokens tokens extrapolate the line. Context tokens do not count.
    """
    if num_target_tokens < 1:
        raise ValueError(f"num_target_tokens must be >= 1 (the number of packed target tokens, "
                         f"(height // 16) * (width // 16)); got {num_target_tokens}")
    if base_tokens == max_tokens:
        raise ValueError("base_tokens and max_tokens must differ: they are the two points of the line")
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (num_target_tokens - base_tokens)


def time_shift(mu: float, sigmas: torch.Tensor | np.ndarray, exponent: float = 1.0):
    """exp(mu) / (exp(mu) + (1/sigma - 1)**exponent): pushes sigmas towards 1 (more noise).

    With exponent 1: logit(shifted) = logit(sigma) + mu, a static shift by e^mu. Defined on (0, 1].
    """
    if (sigmas <= 0).any() or (sigmas > 1).any():
        raise ValueError("time_shift is defined for sigmas in (0, 1]; shift the N sigmas first and "
                         "append the final 0 afterwards (as shifted_sigmas does)")
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** exponent)


# The scheduler options that FluxKontextPipeline reads (calculate_shift's four constants), with their
# diffusers defaults, and the keyword of shift_mu each one feeds.
SHIFT_CONFIG_KEYS = {"base_image_seq_len": ("base_tokens", 256), "max_image_seq_len": ("max_tokens", 4096),
                     "base_shift": ("base_shift", 0.5), "max_shift": ("max_shift", 1.15)}
# Options of FlowMatchEulerDiscreteScheduler.set_timesteps that this module does not rebuild, with the value
# that leaves them off (FLUX's setting).
UNSUPPORTED_SCHEDULER_OPTIONS = {"use_dynamic_shifting": True, "time_shift_type": "exponential",
                                 "shift_terminal": None, "use_karras_sigmas": False,
                                 "use_exponential_sigmas": False, "use_beta_sigmas": False, "invert_sigmas": False}


def shift_config(scheduler_config) -> dict:
    """shift_mu's keywords from a scheduler's config, read as ``FluxKontextPipeline.__call__`` reads them
    (``scheduler.config.get("base_image_seq_len", 256)`` and so on).

    Raises ValueError for a scheduler option that changes the sigmas in a way this module does not rebuild.
    """
    changed = {key: scheduler_config.get(key, off) for key, off in UNSUPPORTED_SCHEDULER_OPTIONS.items()
               if (scheduler_config.get(key, off) or None) != (off or None)}  # None, 0 and False: off
    if changed:
        raise ValueError(f"the scheduler's config sets {changed}; shifted_sigmas rebuilds only FLUX's setting "
                         f"{UNSUPPORTED_SCHEDULER_OPTIONS}. Use the pipeline itself for this scheduler, or "
                         "load one with FLUX's scheduler_config.json")
    return {name: scheduler_config.get(key, default) for key, (name, default) in SHIFT_CONFIG_KEYS.items()}


def shifted_sigmas(num_steps: int, num_target_tokens: int, **shift_config) -> torch.Tensor:
    """The N shifted sigmas followed by a final 0: [N + 1], as the scheduler keeps them."""
    mu = shift_mu(num_target_tokens, **shift_config)
    sigmas = torch.from_numpy(time_shift(mu, base_sigmas(num_steps))).float()
    return torch.cat([sigmas, torch.zeros(1)])


def timesteps_from_sigmas(sigmas: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The timesteps the transformer is given (before the pipeline divides them by 1000)."""
    return sigmas[:-1] * num_train_timesteps


def target_tokens(height: int, width: int) -> int:
    """The number of packed target tokens of a height x width output: (height/16) * (width/16)."""
    multiple = VAE_SCALE_FACTOR * PATCH
    if height < multiple or width < multiple or height % multiple or width % multiple:
        floored = (multiple * max(1, height // multiple), multiple * max(1, width // multiple))
        pipeline = output_size(max(1, height), max(1, width))  # what FluxKontextPipeline(height=, width=) makes
        raise ValueError(f"height and width must be positive multiples of {multiple} (8 for the VAE x 2 for "
                         f"packing); got height={height}, width={width}. Pass the size the pipeline really "
                         f"generates: it rescales height x width to max_area first, then floors "
                         f"(preprocessing.output_size); with the default max_area 1024² that is "
                         f"height={pipeline.height}, width={pipeline.width}. Floored alone, height={floored[0]}, "
                         f"width={floored[1]} is what it makes only with max_area=height*width")
    rows, cols = token_grid(height, width)
    return rows * cols


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step from sigma to sigma_next: x_next = x + (sigma_next - sigma) * v.

    As ``FlowMatchEulerDiscreteScheduler.step``: the sample is upcast to fp32, dt is an fp32
    scalar (negative: sigma decreases), the result is cast to the velocity's dtype.
    """
    if sample.shape != velocity.shape:
        raise ValueError(f"sample {tuple(sample.shape)} and velocity {tuple(velocity.shape)} must have the same "
                         "shape; slice the transformer output to the target tokens first (pred[:, :n_target])")
    dt = torch.as_tensor(sigma_next, dtype=torch.float32) - torch.as_tensor(sigma, dtype=torch.float32)
    return (sample.float() + dt * velocity).to(velocity.dtype)  # [B, L, 64]


@dataclass(frozen=True)
class SamplingTrace:
    """What one pipeline call did at each step, recorded with a forward hook on the transformer."""

    sigmas: torch.Tensor  # [N + 1]: the scheduler's sigmas after the call
    model_timesteps: torch.Tensor  # [N]: the `timestep` the transformer received (t / 1000)
    latents: list  # N + 1 tensors [B, L, 64]: the target tokens entering each step, then the result
    velocities: list  # N tensors [B, L, 64]: the predictions, sliced to the target tokens
    context_tokens: int

    @property
    def target_tokens(self) -> int:
        return self.latents[0].shape[1]


@torch.no_grad()
def trace_sampling(pipe, **call_kwargs) -> SamplingTrace:
    """Run ``pipe(**call_kwargs, output_type="latent")`` and record every step's input, velocity and timestep.

    Uses only public APIs: a torch forward hook on ``pipe.transformer`` and ``pipe.scheduler.sigmas``.
    """
    if call_kwargs.get("true_cfg_scale", 1.0) > 1:
        raise ValueError("trace_sampling records one transformer call per step; leave true_cfg_scale at 1")
    calls = []

    def record(module, args, kwargs, output):
        calls.append((kwargs["hidden_states"].clone(), kwargs["timestep"].clone(), output[0].clone()))

    handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
    try:
        final = pipe(**call_kwargs, output_type="latent").images  # [B, L, 64], still packed
    finally:
        handle.remove()
    n_target = final.shape[1]
    latents = [hidden[:, :n_target] for hidden, _, _ in calls] + [final]
    velocities = [prediction[:, :n_target] for _, _, prediction in calls]
    model_timesteps = torch.stack([timestep[0] for _, timestep, _ in calls])  # [N]
    context_tokens = calls[0][0].shape[1] - n_target
    return SamplingTrace(pipe.scheduler.sigmas.clone(), model_timesteps, latents, velocities, context_tokens)


@dataclass(frozen=True)
class Schedule:
    """Everything the pipeline derives from an output size and a number of steps."""

    height: int
    width: int
    tokens: int  # packed target tokens
    mu: float
    sigmas: torch.Tensor  # [N + 1], ends with 0
    timesteps: torch.Tensor  # [N], sigmas[:-1] * 1000

    @property
    def shift(self) -> float:
        """The equivalent static shift factor e^mu."""
        return math.exp(self.mu)

    @property
    def steps(self) -> torch.Tensor:
        """dt = sigma_next - sigma for each step: [N], all negative."""
        return self.sigmas[1:] - self.sigmas[:-1]


def schedule_for_size(height: int, width: int, num_steps: int = 28) -> Schedule:
    """The schedule FluxKontextPipeline uses for a height x width output (the size after its max_area rescale)."""
    tokens = target_tokens(height, width)
    sigmas = shifted_sigmas(num_steps, tokens)
    return Schedule(height, width, tokens, shift_mu(tokens), sigmas, timesteps_from_sigmas(sigmas))


def format_schedule_table(schedule: Schedule, max_rows: int = 8) -> str:
    """A text table: header line, then step, sigma, timestep, dt (first and last rows if long)."""
    n = len(schedule.timesteps)
    header = (f"{schedule.height}x{schedule.width}: {schedule.tokens} target tokens, mu {schedule.mu:.4f}, "
              f"shift e^mu {schedule.shift:.4f}, {n} steps")
    rows = [f"{'step':>4}  {'sigma':>7}  {'timestep':>8}  {'dt':>8}"]
    shown = list(range(n)) if n <= max_rows else list(range(max_rows // 2)) + [None] + list(range(n - max_rows // 2, n))
    for i in shown:
        if i is None:
            rows.append(f"{'...':>4}")
            continue
        rows.append(f"{i:>4}  {schedule.sigmas[i].item():7.4f}  {schedule.timesteps[i].item():8.2f}  "
                    f"{schedule.steps[i].item():8.4f}")
    return "\n".join([header] + rows)


def draw_schedule(schedule: Schedule):
    """One figure: sigma per step (shifted and unshifted), step sizes |dt|, and the table as text."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw=dict(width_ratios=[1, 1, 0.62]))
    n = len(schedule.timesteps)
    steps = np.arange(n + 1)
    unshifted = np.append(base_sigmas(n), 0.0)
    axes[0].plot(steps, unshifted, "--", color="grey", label="unshifted linspace(1, 1/N, N)")
    axes[0].plot(steps, schedule.sigmas.numpy(), "o-", ms=3, label=f"shifted, mu = {schedule.mu:.3f}")
    axes[0].set(xlabel="step", ylabel="sigma", title=f"{schedule.height}x{schedule.width}: sigmas")
    axes[0].legend(fontsize=8)
    axes[1].bar(np.arange(n), -schedule.steps.numpy(), color="#7b3294")
    axes[1].axhline(1 / n, color="grey", ls="--", lw=1, label=f"unshifted 1/{n}")
    axes[1].set(xlabel="step", ylabel="|dt| = sigma - sigma_next", title="step sizes")
    axes[1].legend(fontsize=8)
    header, *rows = format_schedule_table(schedule).splitlines()
    axes[2].axis("off")
    axes[2].set_title(header.replace(", shift", "\nshift"), fontsize=9)
    axes[2].text(0, 1, "\n".join(rows), family="monospace", fontsize=8.5, va="top", transform=axes[2].transAxes)
    fig.tight_layout()
    return fig


def show_schedule(height: int = 1024, width: int = 1024, num_steps: int = 28) -> None:
    """The widget's body: draw the schedule of one size, table included. Prints nothing and
    returns None, so that ipywidgets.interact adds no other output."""
    draw_schedule(schedule_for_size(height, width, num_steps))
    plt.show()
