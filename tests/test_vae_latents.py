"""The VAE step rebuilt (kontext_teach.vae_latents) against diffusers' AutoencoderKL and FluxKontextPipeline."""

import json
import types

import matplotlib
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from kontext_teach.anatomy import full_size
from kontext_teach.toy import miniature
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR
from kontext_teach.lab.harness import figure_png
from kontext_teach.packing import pack_latents, unpack_latents
from kontext_teach.vae_latents import (
    LOGVAR_RANGE,
    Posterior,
    channel_view,
    decode_image_latents,
    draw_shapes_image,
    encode_image_latents,
    encode_posterior,
    latent_shape,
    plot_channel_view,
    plot_channels,
    posterior_spread,
    scale_latents,
    split_moments,
    to_pixels,
    to_unit_range,
    unscale_latents,
    vae_scale_factor,
)

matplotlib.use("Agg")

SIZES = [(64, 64), (64, 96), (96, 48), (128, 80)]  # (height, width), square and non-square
BATCHES = [1, 2, 3]
CASES = [(h, w, b) for (h, w) in SIZES for b in BATCHES if (h * w * b) <= 64 * 96 * 2]


def image_batch(pipe, height, width, batch_size):
    """A batch of distinct synthetic pictures, preprocessed by the pipeline's own image processor: [B, 3, H, W]."""
    pictures = [draw_shapes_image(width, height, seed=i) for i in range(batch_size)]
    return pipe.image_processor.preprocess(pictures, height, width)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


# ---- sizes -------------------------------------------------------------------------------------------

def test_scale_factor_matches_the_pipeline(pipe):
    assert vae_scale_factor(pipe.vae.config) == pipe.vae_scale_factor == 8


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_scale_factor_halves_once_per_level_but_the_last(levels):
    config = types.SimpleNamespace(block_out_channels=(32,) * levels)
    assert vae_scale_factor(config) == 2 ** (levels - 1)


def test_full_size_vae_is_8x_down_16_channels_83_8_m_parameters():
    with torch.device("meta"):
        vae = AutoencoderKL(**full_size.VAE)
        posterior = encode_posterior(vae, torch.empty(1, 3, 1024, 1024))
    assert vae_scale_factor(vae.config) == 8 and vae.config.latent_channels == 16
    assert tuple(posterior.mean.shape) == latent_shape(vae.config, 1, 1024, 1024) == (1, 16, 128, 128)
    assert round(full_size.count_parameters(vae) / 1e6, 1) == 83.8


@pytest.mark.parametrize("height, width, batch_size", CASES)
def test_latent_shape_matches_the_encoder(pipe, height, width, batch_size):
    images = image_batch(pipe, height, width, batch_size)
    expected = latent_shape(pipe.vae.config, batch_size, height, width)
    assert tuple(pipe.vae.encode(images).latent_dist.mean.shape) == expected


# ---- the posterior -----------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width, batch_size", CASES)
def test_posterior_matches_diagonal_gaussian(pipe, height, width, batch_size):
    images = image_batch(pipe, height, width, batch_size)
    ours = encode_posterior(pipe.vae, images)
    theirs = pipe.vae.encode(images).latent_dist
    assert isinstance(theirs, DiagonalGaussianDistribution)
    torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.logvar, theirs.logvar, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.std, theirs.std, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.mode(), theirs.mode(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("height, width, batch_size", [(64, 96, 1), (96, 48, 2)])
def test_sample_matches_diagonal_gaussian_with_the_same_generator(pipe, height, width, batch_size, seed):
    images = image_batch(pipe, height, width, batch_size)
    ours = encode_posterior(pipe.vae, images).sample(torch.Generator().manual_seed(seed))
    theirs = pipe.vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(seed))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_split_moments_clamps_the_log_variance_like_diffusers():
    moments = torch.cat([torch.randn(2, 4, 3, 5), torch.linspace(-60, 60, 120).reshape(2, 4, 3, 5)], dim=1)
    ours, theirs = split_moments(moments), DiagonalGaussianDistribution(moments)
    torch.testing.assert_close(ours.logvar, theirs.logvar, atol=0, rtol=0)
    torch.testing.assert_close(ours.std, theirs.std)
    assert ours.logvar.min().item() == LOGVAR_RANGE[0] and ours.logvar.max().item() == LOGVAR_RANGE[1]


def test_mode_is_deterministic_and_sample_is_not(pipe):
    images = image_batch(pipe, 64, 96, 1)
    first, second = encode_posterior(pipe.vae, images), encode_posterior(pipe.vae, images)
    assert torch.equal(first.mode(), second.mode())
    seeded = [first.sample(torch.Generator().manual_seed(seed)) for seed in (0, 1, 3, 3)]
    assert not torch.equal(seeded[0], seeded[1])
    assert torch.equal(seeded[2], seeded[3])


def test_samples_scatter_around_the_mode_by_the_posterior_std():
    posterior = Posterior(mean=torch.randn(1, 16, 4, 6), logvar=torch.full((1, 16, 4, 6), -3.0))
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([posterior.sample(generator) for _ in range(2000)])  # [N, 1, 16, 4, 6]
    torch.testing.assert_close(draws.mean(0), posterior.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(draws.std(0), posterior.std, atol=0.02, rtol=0)


def test_posterior_spread_reports_the_ratio():
    posterior = Posterior(mean=torch.tensor([[[[-2.0, 2.0]]]]), logvar=torch.full((1, 1, 1, 2), np.log(0.25)))
    spread = posterior_spread(posterior)
    assert spread["typical_std"] == pytest.approx(0.5)
    assert spread["mean_spread"] == pytest.approx(posterior.mean.std().item())
    assert spread["ratio"] == pytest.approx(0.5 / posterior.mean.std().item())


# ---- shift and scale ---------------------------------------------------------------------------------

def test_scale_and_unscale_are_inverse():
    z = torch.randn(3, 16, 6, 10, dtype=torch.float64) * 3
    for shift, scale in [(0.1159, 0.3611), (0.0, 0.18215), (-1.5, 2.0)]:
        torch.testing.assert_close(unscale_latents(scale_latents(z, shift, scale), shift, scale), z)
        torch.testing.assert_close(scale_latents(unscale_latents(z, shift, scale), shift, scale), z)


def test_scaling_uses_the_config_values(pipe):
    shipped = json.loads((EMBEDDED_MODEL_DIR / "vae" / "config.json").read_text())
    assert (pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor) == (shipped["shift_factor"],
                                                                               shipped["scaling_factor"])
    z = torch.tensor([pipe.vae.config.shift_factor, pipe.vae.config.shift_factor + 1.0])
    scaled = scale_latents(z, pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor)
    torch.testing.assert_close(scaled, torch.tensor([0.0, pipe.vae.config.scaling_factor]))


# ---- equal to the pipeline's image latents -----------------------------------------------------------

@pytest.mark.parametrize("height, width, batch_size", CASES)
def test_encode_matches_prepare_latents(pipe, height, width, batch_size):
    images = image_batch(pipe, height, width, batch_size)
    ours = encode_image_latents(pipe.vae, images)  # [B, 16, h, w]
    _, theirs, _, _ = pipe.prepare_latents(images, batch_size, 16, height, width, torch.float32, "cpu",
                                           torch.Generator().manual_seed(0))  # packed [B, L, 64]
    torch.testing.assert_close(pack_latents(ours), theirs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours, unpack_latents(theirs, height // 8, width // 8), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("height, width, batch_size", [(64, 96, 2), (96, 48, 3)])
def test_encode_matches_prepare_latents_with_one_generator_per_image(pipe, height, width, batch_size):
    images = image_batch(pipe, height, width, batch_size)
    generators = [torch.Generator().manual_seed(i) for i in range(batch_size)]
    _, theirs, _, _ = pipe.prepare_latents(images, batch_size, 16, height, width, torch.float32, "cpu", generators)
    # the pipeline encodes image by image here: batch-size float differences only
    torch.testing.assert_close(pack_latents(encode_image_latents(pipe.vae, images)), theirs, atol=1e-4, rtol=1e-4)


def test_one_condition_image_repeated_for_several_prompts(pipe):
    images = image_batch(pipe, 64, 96, 1)
    _, theirs, _, _ = pipe.prepare_latents(images, 3, 16, 64, 96, torch.float32, "cpu", None)
    ours = pack_latents(encode_image_latents(pipe.vae, images)).repeat(3, 1, 1)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_sampled_latents_differ_from_the_pipeline_by_the_scaled_noise(pipe):
    images = image_batch(pipe, 64, 64, 1)
    sampled = encode_image_latents(pipe.vae, images, sample=True, generator=torch.Generator().manual_seed(0))
    mode = encode_image_latents(pipe.vae, images)
    std = encode_posterior(pipe.vae, images).std
    eps = torch.randn(mode.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampled - mode, pipe.vae.config.scaling_factor * std * eps, atol=1e-5, rtol=1e-4)


# ---- decoding ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width, batch_size", [(64, 64, 1), (64, 96, 2), (128, 80, 1)])
def test_round_trip_matches_autoencoder_forward(pipe, height, width, batch_size):
    images = image_batch(pipe, height, width, batch_size)
    ours = decode_image_latents(pipe.vae, encode_image_latents(pipe.vae, images))
    theirs = pipe.vae(images).sample  # encode -> mode -> decode, no scaling
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert ours.shape == images.shape


@pytest.mark.parametrize("height, width, batch_size", [(64, 96, 1), (80, 48, 2)])
def test_decode_matches_the_pipeline_output(pipe, height, width, batch_size):
    picture = draw_shapes_image(width, height)
    common = dict(image=picture, prompt="paint the house blue", height=height, width=width, max_area=height * width,
                  _auto_resize=False, num_inference_steps=2, num_images_per_prompt=batch_size)
    tokens = pipe(**common, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    pixels = pipe(**common, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    ours = to_unit_range(decode_image_latents(pipe.vae, unpack_latents(tokens, height // 8, width // 8)))
    torch.testing.assert_close(ours, pixels, atol=1e-5, rtol=1e-5)


def test_to_pixels_matches_the_image_processor(pipe):
    images = torch.linspace(-1.3, 1.3, 2 * 3 * 8 * 16).reshape(2, 3, 8, 16)
    np.testing.assert_allclose(to_pixels(images), pipe.image_processor.postprocess(images, output_type="np"), atol=1e-6)
    torch.testing.assert_close(to_unit_range(images), pipe.image_processor.postprocess(images, output_type="pt"))


# ---- the picture, the widget, the plots --------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(64, 64), (192, 128), (96, 160)])
def test_draw_shapes_image_is_deterministic_and_not_flat(width, height):
    first, again = np.asarray(draw_shapes_image(width, height)), np.asarray(draw_shapes_image(width, height))
    assert first.shape == (height, width, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 10
    assert not np.array_equal(first, np.asarray(draw_shapes_image(width, height, seed=1)))


def test_channel_view_picks_one_map(pipe):
    posterior = encode_posterior(pipe.vae, image_batch(pipe, 64, 96, 2))
    assert torch.equal(channel_view(posterior, 5, "mode", item=1), posterior.mean[1, 5])
    assert torch.equal(channel_view(posterior, 5, "std"), posterior.std[0, 5])
    sample = channel_view(posterior, 5, "sample", seed=4)
    assert torch.equal(sample, posterior.sample(torch.Generator().manual_seed(4))[0, 5])
    assert not torch.equal(sample, channel_view(posterior, 5, "sample", seed=5))


def test_plots_draw_every_channel(pipe):
    posterior = encode_posterior(pipe.vae, image_batch(pipe, 64, 96, 1))
    fig = plot_channels(posterior.mean[0], "mode")
    assert sum(len(ax.get_images()) for ax in fig.axes) == 16  # one image per channel; the colour bar has none
    fig = plot_channel_view(posterior, 3, "sample", seed=1)
    assert "channel 3" in fig.axes[0].get_title()
    png = figure_png(fig)
    assert png.startswith(b"\x89PNG") and fig.number not in matplotlib.pyplot.get_fignums()  # closed
    matplotlib.pyplot.close("all")


# ---- bad input ---------------------------------------------------------------------------------------

def test_bad_images_get_clear_errors(pipe):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*image_processor.preprocess"):
        encode_image_latents(pipe.vae, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encode_image_latents(pipe.vae, torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"multiple of 8.*resize or crop it, e.g. to 64x96"):
        encode_image_latents(pipe.vae, torch.zeros(1, 3, 70, 100))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        encode_image_latents(pipe.vae, torch.full((1, 3, 64, 64), 255.0))
    with pytest.raises(ValueError, match=r"multiple of 8"):
        latent_shape(pipe.vae.config, 1, 0, 64)


def test_bad_latents_and_arguments_get_clear_errors(pipe):
    with pytest.raises(ValueError, match=r"unpack_latents first"):
        decode_image_latents(pipe.vae, torch.zeros(1, 24, 64))
    with pytest.raises(ValueError, match=r"at least 16x16"):
        draw_shapes_image(8, 64)
    posterior = Posterior(mean=torch.zeros(1, 16, 2, 2), logvar=torch.zeros(1, 16, 2, 2))
    with pytest.raises(ValueError, match=r"channel must be in 0..15"):
        channel_view(posterior, 16)
    with pytest.raises(ValueError, match=r"view must be one of"):
        channel_view(posterior, 0, "median")
