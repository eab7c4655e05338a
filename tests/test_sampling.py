"""The denoising loop by hand equals FluxKontextPipeline, for the diffusers and the from-scratch transformer."""

import pytest
import torch
from PIL import Image

import kontext_teach as kt
from kontext_teach.sampling import initial_noise, kontext_edit
from kontext_teach.solutions import s08_sampling_loop as s
from kontext_teach.transformer import KontextTransformer

TOKENS = 24


def picture(width, height, seed):
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height // 8, width // 8, 3, generator=g) * 255).byte()
    return Image.fromarray(pixels.numpy()).resize((width, height), Image.Resampling.NEAREST)


def pipeline_latents(pipe, image, prompts, height, width, noise, steps, **options):
    return pipe(image=image, prompt=prompts, height=height, width=width, max_area=height * width, _auto_resize=False,
                num_inference_steps=steps, max_sequence_length=TOKENS, latents=noise, output_type="latent",
                **options).images


@pytest.mark.parametrize("batch, height, width, image_size, steps", [
    (1, 64, 64, (64, 64), 4), (2, 48, 80, (64, 48), 3), (1, 32, 96, (96, 32), 5), (3, 64, 32, (32, 64), 2)])
def test_loop_equals_the_pipeline(pipe, batch, height, width, image_size, steps):
    image, prompts = picture(*image_size, seed=batch), [f"make the circle red {i}" for i in range(batch)]
    noise = initial_noise(batch, 16, height // 8, width // 8, torch.Generator().manual_seed(batch))
    ours = kontext_edit(pipe.components, image, prompts, height=height, width=width, num_inference_steps=steps,
                        max_sequence_length=TOKENS, latents=noise, guidance_scale=2.5)
    kt.compare("loop latents", ours.latents, pipeline_latents(pipe, image, prompts, height, width, noise, steps,
                                                               guidance_scale=2.5), atol=1e-5)
    decoded = pipe(image=image, prompt=prompts, height=height, width=width, max_area=height * width,
                   _auto_resize=False, num_inference_steps=steps, max_sequence_length=TOKENS, latents=noise,
                   guidance_scale=2.5, output_type="pt").images
    kt.compare("decoded", (ours.image / 2 + 0.5).clamp(0, 1), decoded, atol=1e-5)


def test_true_cfg_equals_the_pipeline(pipe):
    image, noise = picture(64, 64, 0), initial_noise(2, 16, 8, 8, torch.Generator().manual_seed(0))
    options = dict(true_cfg_scale=3.0, negative_prompt="blurry", guidance_scale=3.5)
    ours = kontext_edit(pipe.components, image, ["remove the square"] * 2, height=64, width=64, num_inference_steps=3,
                        max_sequence_length=TOKENS, latents=noise, **options)
    kt.compare("true CFG", ours.latents, pipeline_latents(pipe, image, ["remove the square"] * 2, 64, 64, noise, 3,
                                                          **options), atol=1e-5)


def test_default_noise_and_generator_match_the_pipeline(pipe):
    image = picture(64, 64, 1)
    ours = kontext_edit(pipe.components, image, "mirror the image", height=64, width=64, num_inference_steps=2,
                        max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(5))
    theirs = pipe(image=image, prompt="mirror the image", height=64, width=64, max_area=64 * 64, _auto_resize=False,
                  num_inference_steps=2, max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(5),
                  output_type="latent").images
    kt.compare("noise drawn from the same generator", ours.latents, theirs)


def test_from_scratch_transformer_in_the_loop(pipe):
    image, noise = picture(48, 64, 2), initial_noise(1, 16, 8, 6, torch.Generator().manual_seed(2))
    scratch = KontextTransformer.from_diffusers(pipe.transformer)
    ours = kontext_edit(pipe.components, image, "paint the triangle blue", height=64, width=48,
                        num_inference_steps=3, max_sequence_length=TOKENS, latents=noise, transformer=scratch)
    kt.compare("from-scratch loop", ours.latents,
               pipeline_latents(pipe, image, "paint the triangle blue", 64, 48, noise, 3), atol=1e-4)


def test_trajectory_and_context_index(pipe):
    image, noise = picture(64, 64, 3), initial_noise(1, 16, 8, 8, torch.Generator().manual_seed(3))
    common = dict(height=64, width=64, num_inference_steps=4, max_sequence_length=TOKENS, latents=noise)
    one = kontext_edit(pipe.components, image, "erase the circle", keep_trajectory=True, **common)
    zero = kontext_edit(pipe.components, image, "erase the circle", context_index=0, **common)
    assert len(one.trajectory) == 5 and torch.equal(one.trajectory[0], noise) and torch.equal(one.trajectory[-1], one.latents)
    assert (one.latents - zero.latents).abs().max() > 1e-4  # the context's position index matters
    assert one.sigmas[0] == 1 and one.sigmas[-1] == 0


def test_predicted_clean_latents_is_a_step_to_zero():
    x, v = torch.randn(1, 4, 64), torch.randn(1, 4, 64)
    torch.testing.assert_close(s.predicted_clean_latents(x, v, 0.7), x - 0.7 * v)
    assert s.transformer_calls(28, true_cfg=False) == 28 and s.transformer_calls(28, true_cfg=True) == 56


def test_heun_step_is_exact_for_a_constant_velocity_and_costs_two_calls():
    calls = []

    def velocity(latents, sigma):
        calls.append(sigma)
        return torch.ones_like(latents)

    x = torch.zeros(2, 3)
    torch.testing.assert_close(s.heun_step(velocity, x, 0.8, 0.5), x - 0.3)
    assert len(calls) == 2
    s.heun_step(velocity, x, 0.2, 0.0)
    assert len(calls) == 3  # the last step falls back to Euler
