"""The schedule rebuilt from scratch against FlowMatchEulerDiscreteScheduler and FluxKontextPipeline."""

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS, calculate_shift
from PIL import Image

from kontext_teach.anatomy import full_size
from kontext_teach.schedule import (base_sigmas, draw_schedule, euler_step, format_schedule_table, schedule_for_size,
                                    shift_config, shift_mu, shifted_sigmas, show_schedule, target_tokens, time_shift,
                                    timesteps_from_sigmas, trace_sampling)

matplotlib.use("Agg")

SMALL_SIZES = [(16, 16), (64, 64), (48, 80), (96, 64), (128, 128), (256, 256), (512, 512), (512, 768), (768, 1360)]
ALL_SIZES = list(PREFERRED_KONTEXT_RESOLUTIONS) + SMALL_SIZES  # (width, height)
STEP_COUNTS = [1, 4, 28, 30, 50]


def scheduler_schedule(num_steps: int, tokens: int) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler after the pipeline's own call: sigmas = linspace(1, 1/N, N), mu = calculate_shift."""
    scheduler = full_size.full_size_scheduler()
    config = scheduler.config
    mu = calculate_shift(tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                         config.max_shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    return scheduler


@pytest.mark.parametrize("width, height", ALL_SIZES)
@pytest.mark.parametrize("num_steps", STEP_COUNTS)
def test_schedule_equals_set_timesteps(width, height, num_steps):
    tokens = target_tokens(height, width)
    reference = scheduler_schedule(num_steps, tokens)
    ours = shifted_sigmas(num_steps, tokens)
    assert torch.equal(ours, reference.sigmas)
    assert torch.equal(timesteps_from_sigmas(ours), reference.timesteps)


@pytest.mark.parametrize("tokens", [1, 16, 24, 255, 256, 1024, 2304, 4042, 4096, 4150, 9000, 16384])
def test_mu_equals_calculate_shift(tokens):
    assert shift_mu(tokens) == pytest.approx(calculate_shift(tokens), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("width, height", ALL_SIZES)
def test_target_tokens_are_sixteen_pixel_patches(width, height):
    assert target_tokens(height, width) == (height // 16) * (width // 16)
    assert target_tokens(height, width) == target_tokens(width, height)


def test_mu_is_linear_in_target_tokens_and_not_clamped():
    assert shift_mu(256) == pytest.approx(0.5)
    assert shift_mu(4096) == pytest.approx(1.15)
    tokens = np.arange(1, 20000, 37)
    mus = np.array([shift_mu(int(n)) for n in tokens])
    assert np.abs(np.diff(mus, 2)).max() < 1e-12  # second differences vanish: a straight line
    assert shift_mu(16384) > 2 * 1.15  # 2048x2048 extrapolates far beyond max_shift


@pytest.mark.parametrize("num_steps", STEP_COUNTS)
@pytest.mark.parametrize("tokens", [1, 16, 256, 4096, 16384])
def test_sigmas_decrease_from_one_to_zero(num_steps, tokens):
    sigmas = shifted_sigmas(num_steps, tokens)
    assert sigmas.shape == (num_steps + 1,)
    assert sigmas[0] == 1 and sigmas[-1] == 0
    assert (sigmas[:-1] > 0).all() and (sigmas[:-1] <= 1).all()
    assert (sigmas[1:] < sigmas[:-1]).all()


@pytest.mark.parametrize("num_steps", [4, 28])
def test_more_tokens_means_more_noise_at_every_step(num_steps):
    curves = torch.stack([shifted_sigmas(num_steps, n) for n in (16, 256, 1024, 4096, 8192)])
    assert (curves[1:, 1:-1] > curves[:-1, 1:-1]).all()


@pytest.mark.parametrize("mu", [-0.5, 0.0, 0.4594, 1.15, 3.0])
def test_time_shift_is_a_translation_in_logit_space(mu):
    sigmas = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    shifted = time_shift(mu, sigmas)
    assert torch.allclose(torch.logit(shifted) - torch.logit(sigmas), torch.full_like(sigmas, mu), atol=1e-9)


@pytest.mark.parametrize("tokens", [16, 256, 4096])
def test_exponential_shift_equals_a_static_shift_by_e_to_the_mu(tokens):
    """use_dynamic_shifting=False with shift = e^mu gives the same sigmas (up to float32 rounding)."""
    static = FlowMatchEulerDiscreteScheduler(shift=math.exp(shift_mu(tokens)), use_dynamic_shifting=False)
    static.set_timesteps(sigmas=np.linspace(1.0, 1 / 28, 28))
    assert torch.allclose(shifted_sigmas(28, tokens), static.sigmas, atol=1e-6, rtol=0)


def test_set_timesteps_without_sigmas_is_not_the_pipeline_schedule():
    """The pipeline passes sigmas=linspace(1, 1/N, N); set_timesteps(N, mu=...) alone ends at 0.001 instead."""
    scheduler = full_size.full_size_scheduler()
    scheduler.set_timesteps(28, mu=shift_mu(4096))
    assert not torch.allclose(scheduler.sigmas, shifted_sigmas(28, 4096), atol=1e-3)
    assert scheduler.sigmas[-2] < shifted_sigmas(28, 4096)[-2] / 10


def test_config_shift_is_unused_with_dynamic_shifting():
    a = FlowMatchEulerDiscreteScheduler(**{**full_size.SCHEDULER, "shift": 3.0})
    b = FlowMatchEulerDiscreteScheduler(**{**full_size.SCHEDULER, "shift": 7.0})
    for scheduler in (a, b):
        scheduler.set_timesteps(sigmas=base_sigmas(28), mu=shift_mu(4096))
    assert torch.equal(a.sigmas, b.sigmas)


SHAPES = [(1, 16, 64), (2, 24, 64), (3, 12, 64), (2, 4096 // 16, 64), (1, 16, 8, 12)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_steps, tokens", [(4, 16), (28, 4096), (7, 24)])
def test_euler_step_equals_scheduler_step(shape, dtype, num_steps, tokens):
    generator = torch.Generator().manual_seed(num_steps + len(shape))
    scheduler = scheduler_schedule(num_steps, tokens)
    ours = theirs = torch.randn(shape, generator=generator).to(dtype)
    sigmas = shifted_sigmas(num_steps, tokens)
    for index, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(shape, generator=generator).to(dtype)
        theirs = scheduler.step(velocity, t, theirs, return_dict=False)[0]
        ours = euler_step(ours, velocity, sigmas[index], sigmas[index + 1])
        assert ours.dtype == theirs.dtype == dtype
        assert torch.equal(ours, theirs), f"step {index}"


def test_euler_step_lands_on_x0_for_the_exact_velocity():
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 64, generator=generator), torch.randn(2, 16, 64, generator=generator)
    sigmas = shifted_sigmas(5, 16)
    x = noise  # sigma = 1
    for index in range(5):
        x = euler_step(x, noise - x0, sigmas[index], sigmas[index + 1])  # straight path: v is constant
        expected = (1 - sigmas[index + 1]) * x0 + sigmas[index + 1] * noise
        assert torch.allclose(x, expected, atol=1e-5)


@pytest.mark.parametrize("height, width, image_size, batch", [
    (64, 64, (256, 256), 1),
    (48, 80, (128, 96), 2),
    (96, 64, (64, 64), 1),
])
def test_pipeline_schedule_counts_only_target_tokens(pipe, height, width, image_size, batch):
    image = Image.new("RGB", image_size, (180, 60, 30))
    trace = trace_sampling(pipe, image=image, prompt="make the square blue", height=height, width=width,
                           max_area=height * width, _auto_resize=False, num_inference_steps=3,
                           num_images_per_prompt=batch, generator=torch.Generator().manual_seed(1))
    assert trace.target_tokens == target_tokens(height, width)
    assert trace.context_tokens == target_tokens(image_size[1], image_size[0])
    assert torch.equal(trace.sigmas, shifted_sigmas(3, trace.target_tokens))
    assert not torch.allclose(trace.sigmas, shifted_sigmas(3, trace.target_tokens + trace.context_tokens))
    assert torch.allclose(trace.model_timesteps, trace.sigmas[:-1], atol=1e-6, rtol=0)  # t / 1000 = sigma
    for k, velocity in enumerate(trace.velocities):
        assert velocity.shape == (batch, trace.target_tokens, 64)
        assert torch.equal(euler_step(trace.latents[k], velocity, trace.sigmas[k], trace.sigmas[k + 1]),
                           trace.latents[k + 1])


def test_schedule_for_size_and_table():
    schedule = schedule_for_size(1024, 1024, 28)
    assert schedule.tokens == 4096 and schedule.mu == pytest.approx(1.15)
    assert schedule.shift == pytest.approx(math.exp(1.15))
    assert torch.equal(schedule.sigmas, shifted_sigmas(28, 4096))
    assert (schedule.steps < 0).all() and schedule.steps.sum().item() == pytest.approx(-1.0, abs=1e-6)
    table = format_schedule_table(schedule, max_rows=6)
    lines = table.splitlines()
    assert lines[0].startswith("1024x1024: 4096 target tokens, mu 1.1500")
    assert len(lines) == 2 + 6 + 1  # header, column names, 3 first rows, "...", 3 last rows
    assert lines[2].split()[:3] == ["0", "1.0000", "1000.00"]
    short = format_schedule_table(schedule_for_size(64, 96, 3))
    assert len(short.splitlines()) == 2 + 3 and "24 target tokens" in short


def test_draw_schedule_shows_the_table_and_show_schedule_prints_nothing(capsys):
    schedule = schedule_for_size(512, 768, 8)
    fig = draw_schedule(schedule)
    texts = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])
    for row in format_schedule_table(schedule).splitlines()[1:]:
        assert row in texts
    assert "1536 target tokens" in texts
    plt.close(fig)
    assert show_schedule(512, 768, 8) is None
    assert capsys.readouterr().out == ""
    plt.close("all")


def test_shift_config_reads_the_scheduler_as_the_pipeline_does():
    flux = full_size.full_size_scheduler().config
    assert shift_config(flux) == dict(base_tokens=256, max_tokens=4096, base_shift=0.5, max_shift=1.15)
    other = FlowMatchEulerDiscreteScheduler(base_image_seq_len=64, max_image_seq_len=1024, base_shift=0.1,
                                            max_shift=2.0, use_dynamic_shifting=True).config
    tokens = 300
    mu = calculate_shift(tokens, other.base_image_seq_len, other.max_image_seq_len, other.base_shift, other.max_shift)
    assert shift_mu(tokens, **shift_config(other)) == pytest.approx(mu, rel=1e-12)
    assert shift_config({}) == shift_config(flux)  # missing keys: the pipeline's .get defaults
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(other)
    scheduler.set_timesteps(sigmas=base_sigmas(7), mu=mu)
    assert torch.equal(shifted_sigmas(7, tokens, **shift_config(other)), scheduler.sigmas)


@pytest.mark.parametrize("option", [dict(use_dynamic_shifting=False), dict(time_shift_type="linear"),
                                    dict(shift_terminal=0.1), dict(use_karras_sigmas=True), dict(invert_sigmas=True)])
def test_shift_config_refuses_what_it_does_not_rebuild(option):
    config = FlowMatchEulerDiscreteScheduler(**{"use_dynamic_shifting": True, **option}).config
    with pytest.raises(ValueError, match=next(iter(option))):
        shift_config(config)


@pytest.mark.parametrize("call, message", [
    (lambda: base_sigmas(0), "num_steps must be a positive int"),
    (lambda: base_sigmas(2.5), "num_steps must be a positive int"),
    (lambda: shifted_sigmas(28, 0), "num_target_tokens must be >= 1"),
    (lambda: shift_mu(100, base_tokens=256, max_tokens=256), "must differ"),
    (lambda: time_shift(1.15, np.array([1.0, 0.5, 0.0], dtype=np.float32)), r"defined for sigmas in \(0, 1\]"),
    (lambda: time_shift(1.15, torch.tensor([1.5])), r"defined for sigmas in \(0, 1\]"),
    (lambda: target_tokens(100, 64), r"multiples of 16.*max_area.*height=1280, width=816.*height=96, width=64"),
    (lambda: target_tokens(0, 64), "multiples of 16"),
    (lambda: euler_step(torch.zeros(1, 32, 64), torch.zeros(1, 48, 64), 1.0, 0.5), r"pred\[:, :n_target\]"),
])
def test_bad_input_gets_a_helpful_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_trace_sampling_rejects_true_cfg(pipe):
    with pytest.raises(ValueError, match="true_cfg_scale"):
        trace_sampling(pipe, prompt="x", true_cfg_scale=4.0)
