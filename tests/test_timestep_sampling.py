"""Training-time timestep densities and loss weightings against diffusers.training_utils."""

import math

import pytest
import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from kontext_teach.anatomy import full_size
from kontext_teach.training.timestep_sampling import (DENSITIES, DIFFUSERS_DENSITY_NAMES, LOSS_WEIGHTINGS, MODE_SCALE_MAX,
                                             density_cdf, density_pdf, density_quantile, loss_weighting, mode_map, noisy_latents,
                                             sample_u, sigmas_from_u)

PARAMS = [dict(logit_mean=0.0, logit_std=1.0, mode_scale=1.29),  # the Kontext LoRA script's defaults
          dict(logit_mean=0.5, logit_std=0.7, mode_scale=0.0),
          dict(logit_mean=-1.0, logit_std=1.5, mode_scale=-0.5)]


def diffusers_u(density, batch_size, params, seed):
    generator = torch.Generator().manual_seed(seed)
    return compute_density_for_timestep_sampling(DIFFUSERS_DENSITY_NAMES[density], batch_size, generator=generator,
                                                 **params)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 7])
def test_same_generator_gives_the_same_samples(density, batch_size, params, seed):
    ours = sample_u(density, batch_size, generator=torch.Generator().manual_seed(seed), **params)
    theirs = diffusers_u(density, batch_size, params, seed)
    assert ours.shape == (batch_size,)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("params", PARAMS)
def test_quantiles_match_diffusers_samples(density, params):
    samples = diffusers_u(density, 200_000, params, seed=3).double()
    levels = torch.tensor([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99], dtype=torch.float64)
    empirical = torch.quantile(samples, levels)
    assert torch.allclose(empirical, density_quantile(density, levels, **params), atol=4e-3)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("params", PARAMS)
def test_pdf_is_a_density_consistent_with_the_quantiles(density, params):
    x = torch.linspace(0, 1, 4001, dtype=torch.float64)
    assert torch.trapezoid(density_pdf(density, x, **params), x).item() == pytest.approx(1.0, abs=2e-3)
    cdf = density_cdf(density, x, **params)
    assert cdf[0].abs() < 1e-12 and (cdf[-1] - 1).abs() < 1e-12 and (torch.diff(cdf) >= 0).all()
    inner = x[100:-100]
    slope = (density_cdf(density, inner + 1e-6, **params) - density_cdf(density, inner - 1e-6, **params)) / 2e-6
    assert torch.allclose(slope, density_pdf(density, inner, **params), rtol=1e-4)  # pdf = d cdf / dx
    q = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    assert torch.allclose(density_cdf(density, density_quantile(density, q, **params), **params), q, atol=1e-9)
    h = 1e-6
    slope = (density_quantile(density, q + h, **params) - density_quantile(density, q - h, **params)) / (2 * h)
    assert torch.allclose(1 / slope, density_pdf(density, density_quantile(density, q, **params), **params),
                          rtol=1e-4)  # d quantile / dq = 1 / pdf(quantile)


@pytest.mark.parametrize("density", DENSITIES)
def test_histogram_of_diffusers_samples_follows_the_pdf(density):
    samples = diffusers_u(density, 400_000, PARAMS[0], seed=5)
    counts = torch.histc(samples, bins=40, min=0, max=1)
    edges = torch.linspace(0, 1, 41, dtype=torch.float64)
    expected = torch.diff(density_cdf(density, edges, **PARAMS[0]))  # probability per bin
    assert torch.allclose(counts.double() / len(samples), expected, atol=2.5e-3)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("params", [dict(logit_std=1.0, mode_scale=1.29), dict(logit_std=0.6, mode_scale=-0.8)])
def test_densities_are_symmetric_so_u_and_one_minus_u_agree(density, params):
    """Symmetric about 1/2 (logit-normal for mean 0): sigma ~ 1 - u has the density of u."""
    x = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    assert torch.allclose(density_pdf(density, x, **params), density_pdf(density, 1 - x, **params), rtol=1e-6)


@pytest.mark.parametrize("scale", [-1.0, 0.0, 0.5, 1.29, MODE_SCALE_MAX])
def test_mode_map_is_a_decreasing_map_of_the_unit_interval(scale):
    u = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    f = mode_map(u, scale)
    assert f[0] == 1 and f[-1].abs() < 1e-12
    assert (torch.diff(f) <= 1e-12).all()


def test_mode_1_29_concentrates_on_the_middle():
    middle, end = density_pdf("mode", torch.tensor([0.5, 0.02]))
    assert middle > 3 and end < 0.5


@pytest.mark.parametrize("batch_size", [1, 8, 5000])
@pytest.mark.parametrize("density", DENSITIES)
def test_training_sigmas_index_the_schedulers_grid(batch_size, density):
    """The LoRA script: indices = (u * 1000).long(); sigma = scheduler.sigmas[indices] (unshifted)."""
    scheduler = full_size.full_size_scheduler()
    u = sample_u(density, batch_size, generator=torch.Generator().manual_seed(batch_size))
    indices = (u * scheduler.config.num_train_timesteps).long()
    assert torch.equal(sigmas_from_u(u), scheduler.sigmas[indices])
    assert torch.equal(sigmas_from_u(u) * 1000, scheduler.timesteps[indices])


@pytest.mark.parametrize("logit_mean", [-1.0, 1.0])
def test_a_positive_logit_mean_means_less_noise_in_the_scripts_indexing(logit_mean):
    """sigma ~ 1 - u: the script's --logit_mean has the opposite sign of the SD3 paper's (where t = noise level)."""
    scheduler = full_size.full_size_scheduler()
    u = compute_density_for_timestep_sampling("logit_normal", 100_000, logit_mean=logit_mean, logit_std=1.0,
                                              generator=torch.Generator().manual_seed(0))
    sigmas = scheduler.sigmas[(u * 1000).long()]
    assert sigmas.median().item() == pytest.approx(1 / (1 + math.exp(logit_mean)), abs=0.01)  # sigmoid(-mean)
    assert torch.equal(sigmas_from_u(u), sigmas)


def test_training_sigmas_are_one_minus_u_on_a_grid():
    u = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    sigmas = sigmas_from_u(u)
    assert ((1 - u) - sigmas).abs().max() <= 1e-3 + 1e-6
    assert sigmas.min() >= 1e-3 and sigmas.max() <= 1


@pytest.mark.parametrize("shape", [(1, 16, 8, 8), (3, 16, 6, 10), (2, 24, 64)])
def test_noisy_latents_equal_scheduler_scale_noise(shape):
    generator = torch.Generator().manual_seed(len(shape))
    x0, noise = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    scheduler = full_size.full_size_scheduler()
    u = sample_u("logit_normal", shape[0], generator=generator)
    timesteps = scheduler.timesteps[(u * 1000).long()]
    theirs = scheduler.scale_noise(x0, timesteps, noise)
    assert torch.equal(noisy_latents(x0, noise, sigmas_from_u(u)), theirs)


@pytest.mark.parametrize("weighting", LOSS_WEIGHTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch_size", [1, 16])
def test_loss_weighting_equals_diffusers(weighting, dtype, batch_size):
    sigmas = sigmas_from_u(torch.rand(batch_size, generator=torch.Generator().manual_seed(2))).to(dtype)
    sigmas = sigmas.reshape(batch_size, 1, 1, 1)  # as the script passes them: [B, 1, 1, 1]
    ours, theirs = loss_weighting(weighting, sigmas), compute_loss_weighting_for_sd3(weighting, sigmas)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def test_cosmap_weight_is_itself_a_density():
    """Uniform sampling with cosmap weights has the expectation of sampling from the cosmap density."""
    sigmas = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    assert torch.trapezoid(loss_weighting("cosmap", sigmas), sigmas).item() == pytest.approx(1.0, abs=1e-9)


def test_diffusers_silently_falls_back_to_uniform_and_we_do_not():
    typo = compute_density_for_timestep_sampling("logit-normal", 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(typo, sample_u("uniform", 64, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="unknown density 'logit-normal'.*falls back"):
        sample_u("logit-normal", 64)


@pytest.mark.parametrize("call, message", [
    (lambda: sample_u("cosmap", 4), "unknown density"),
    (lambda: sample_u("mode", 4, mode_scale=2.0), r"mode_scale must lie in \[-1.0, 1.7519\]"),
    (lambda: sample_u("mode", 4, mode_scale=-1.5), "mode_scale must lie in"),
    (lambda: sample_u("logit_normal", 4, logit_std=0.0), "logit_std must be > 0"),
    (lambda: density_pdf("mode", torch.tensor([0.5]), mode_scale=3.0), "mode_scale"),
    (lambda: density_quantile("lognorm", torch.tensor([0.5])), "unknown density"),
    (lambda: density_cdf("logit_normal", torch.tensor([0.5]), logit_std=-1.0), "logit_std"),
    (lambda: sigmas_from_u(torch.tensor([0.2, 1.0])), r"u must lie in \[0, 1\)"),
    (lambda: loss_weighting("logit_normal", torch.ones(2)), "change the sampling density instead"),
    (lambda: noisy_latents(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3)), "one sigma per sample"),
])
def test_bad_input_gets_a_helpful_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_logit_normal_is_centred_on_one_half():
    assert density_quantile("logit_normal", torch.tensor(0.5)).item() == pytest.approx(0.5)
    assert density_pdf("logit_normal", torch.tensor([0.5])).item() == pytest.approx(4 / math.sqrt(2 * math.pi))
