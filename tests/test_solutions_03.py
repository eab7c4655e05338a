"""The solutions of notebook 03_vae_latents' exercises."""

import pytest
import torch
from diffusers import AutoencoderKL

from kontext_teach.anatomy import full_size
from kontext_teach.solutions.s03_vae_latents import compression_ratio, encode_in_chunks, estimate_shift_and_scale
from kontext_teach.vae_latents import draw_shapes_image, encode_image_latents, scale_latents


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def shapes_batch(pipe, height, width, batch_size):
    pictures = [draw_shapes_image(width, height, seed=i) for i in range(batch_size)]
    return pipe.image_processor.preprocess(pictures, height, width)  # [B, 3, H, W]


@pytest.mark.parametrize("height, width", [(64, 64), (64, 96), (128, 80)])
def test_compression_ratio_counts_the_real_tensors(pipe, height, width):
    images = shapes_batch(pipe, height, width, 1)
    latents = pipe.vae.encode(images).latent_dist.mode()
    assert compression_ratio(pipe.vae.config, height, width) == pytest.approx(images.numel() / latents.numel())


def test_compression_ratio_of_flux_is_12():
    with torch.device("meta"):
        vae = AutoencoderKL(**full_size.VAE)
        latents = vae.encode(torch.empty(1, 3, 1024, 768)).latent_dist.mode()
    assert compression_ratio(vae.config, 1024, 768) == pytest.approx(3 * 1024 * 768 / latents.numel()) == 12.0


def test_compression_ratio_rejects_sizes_the_vae_cannot_take(pipe):
    with pytest.raises(ValueError, match="multiple of 8"):
        compression_ratio(pipe.vae.config, 100, 64)


@pytest.mark.parametrize("true_mean, true_std", [(0.0, 1.0), (0.1159, 2.77), (-3.0, 0.2)])
def test_estimated_shift_and_scale_standardise_the_latents(true_mean, true_std):
    raw = true_mean + true_std * torch.randn(8, 16, 12, 12, generator=torch.Generator().manual_seed(0))
    shift, scale = estimate_shift_and_scale(raw)
    assert shift == pytest.approx(true_mean, abs=0.02 * true_std)
    assert scale == pytest.approx(1 / true_std, rel=0.02)
    scaled = scale_latents(raw.double(), shift, scale)
    assert scaled.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert scaled.std().item() == pytest.approx(1.0, abs=1e-9)


def test_estimate_shift_and_scale_on_the_miniature_latents(pipe):
    raw = pipe.vae.encode(shapes_batch(pipe, 64, 96, 3)).latent_dist.mode()
    shift, scale = estimate_shift_and_scale(raw)
    scaled = scale_latents(raw.double(), shift, scale)
    assert abs(scaled.mean().item()) < 1e-9 and scaled.std().item() == pytest.approx(1.0)


def test_estimate_shift_and_scale_needs_two_values():
    with pytest.raises(ValueError, match="at least two"):
        estimate_shift_and_scale(torch.ones(1))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
def test_encoding_in_chunks_equals_one_batch(pipe, chunk_size):
    images = shapes_batch(pipe, 64, 64, 5)
    theirs = pipe.vae.encode(images).latent_dist.mode()
    theirs = (theirs - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    ours = encode_in_chunks(pipe.vae, images, chunk_size)
    # batch size changes the convolutions' float paths: fp32-level differences, not errors
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours, encode_image_latents(pipe.vae, images), atol=1e-4, rtol=1e-4)


def test_encode_in_chunks_rejects_empty_chunks(pipe):
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        encode_in_chunks(pipe.vae, shapes_batch(pipe, 64, 64, 1), 0)
