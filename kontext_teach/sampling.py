"""The denoising loop of a Kontext edit, by hand, from the series' own functions.

    sizes        preprocessing.plan_sizes / preprocess_condition_image     (notebook 01)
    text         prompt_encoding.encode_prompt                             (notebook 02)
    context      vae_latents.encode_image_latents -> packing.pack_latents  (notebooks 03, 04)
    ids          position_ids.kontext_image_ids, text_ids                  (notebook 05)
    schedule     schedule.shift_config (the scheduler's constants), shifted_sigmas (notebook 06)
    loop         transformer call (diffusers' or ours, notebook 07), schedule.euler_step
    image        packing.unpack_latents -> vae_latents.decode_image_latents

Given the same initial latents, ``kontext_edit`` returns what ``FluxKontextPipeline`` returns.
"""

from dataclasses import dataclass, field

import torch

from .packing import pack_latents, unpack_latents
from .position_ids import CONTEXT_INDEX, kontext_image_ids, text_ids
from .preprocessing import plan_sizes, preprocess_condition_image
from .prompt_encoding import encode_prompt
from .schedule import euler_step, shift_config, shifted_sigmas
from .transformer import KontextTransformer
from .vae_latents import decode_image_latents, encode_image_latents


@dataclass
class EditResult:
    image: torch.Tensor  # [B, 3, H, W] in [-1, 1] (decoded, not clamped)
    latents: torch.Tensor  # [B, Lt, 64] final packed target tokens
    sigmas: torch.Tensor  # [N + 1]
    trajectory: list[torch.Tensor] = field(default_factory=list)  # packed latents before each step and at the end


def initial_noise(batch_size: int, channels: int, latent_height: int, latent_width: int,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Packed Gaussian noise [B, Lt, 4C], drawn as the pipeline draws it (unpacked, in ``dtype``, then packed)."""
    noise = torch.randn(batch_size, channels, latent_height, latent_width, generator=generator, dtype=dtype)
    return pack_latents(noise)


def model_timestep(sigma, batch: int, dtype: torch.dtype, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The `timestep` the transformer is given at noise level sigma: [B], in ``dtype``.

    As ``FluxKontextPipeline.__call__``: the scheduler's timestep t = sigma * num_train_timesteps (fp32) is
    cast to the latents' dtype first and divided by 1000 in that dtype. In bf16 this rounds differently
    from casting sigma (or t / 1000 computed in fp32), so the order matters for a bit-exact loop.
    """
    t = torch.as_tensor(sigma, dtype=torch.float32) * num_train_timesteps  # the scheduler's timestep
    return t.expand(batch).to(dtype) / 1000  # [B]


def predict_velocity(transformer, latents: torch.Tensor, context: torch.Tensor, sigma: torch.Tensor,
                     guidance: torch.Tensor | None, pooled: torch.Tensor, prompt_embeds: torch.Tensor,
                     ids: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """One transformer call on [target; context] tokens at noise level sigma, sliced to the target: [B, Lt, 64].

    `transformer` is diffusers' FluxTransformer2DModel or the from-scratch KontextTransformer.
    """
    batch = latents.shape[0]
    inputs = dict(hidden_states=torch.cat([latents, context], dim=1),  # [B, Lt + Lc, 64]
                  timestep=model_timestep(sigma, batch, latents.dtype, num_train_timesteps),  # [B]: t / 1000
                  guidance=guidance, pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                  txt_ids=text_ids(prompt_embeds.shape[1]).to(latents.device, latents.dtype),
                  img_ids=ids.to(latents.device, latents.dtype))
    out = transformer(**inputs) if isinstance(transformer, KontextTransformer) else transformer(
        **inputs, return_dict=False)[0]
    return out[:, : latents.shape[1]]


@torch.no_grad()
def kontext_edit(components: dict, image, prompt, *, height: int, width: int, max_area: int | None = None,
                 auto_resize: bool = False, num_inference_steps: int = 28, guidance_scale: float = 3.5,
                 true_cfg_scale: float = 1.0, negative_prompt=None, latents: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, max_sequence_length: int = 512,
                 context_index: float = CONTEXT_INDEX, transformer=None, keep_trajectory: bool = False) -> EditResult:
    """A Kontext edit, step by step. Arguments and defaults as FluxKontextPipeline.__call__
    (guidance_scale 3.5 is diffusers' default; BFL and the model card use 2.5); additionally
    ``context_index`` (the first position coordinate of the context tokens, 1 in Kontext) and
    ``transformer`` (defaults to components["transformer"]; a from-scratch model works too)."""
    vae, transformer = components["vae"], transformer or components["transformer"]
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    batch = len(prompts)
    plan = plan_sizes(image if not isinstance(image, list) else image[0], height=height, width=width,
                      max_area=max_area or height * width, auto_resize=auto_resize)

    prompt_embeds, pooled, _ = encode_prompt(components, prompts, max_sequence_length=max_sequence_length)
    condition = preprocess_condition_image(image, auto_resize=auto_resize)  # [1, 3, Hc, Wc]
    context_latents = encode_image_latents(vae, condition.to(vae.dtype))  # [1, 16, hc, wc] (mode, scaled)
    context_latents = context_latents.expand(batch, -1, -1, -1) if context_latents.shape[0] == 1 else context_latents
    context = pack_latents(context_latents)  # [B, Lc, 64]

    latent_h, latent_w = 2 * (plan.output.height // 16), 2 * (plan.output.width // 16)
    if latents is None:
        latents = initial_noise(batch, vae.config.latent_channels, latent_h, latent_w, generator, prompt_embeds.dtype)
    latents = latents.to(prompt_embeds.device, prompt_embeds.dtype)  # as the pipeline: the prompt's dtype
    ids = kontext_image_ids((latent_h // 2, latent_w // 2), (context_latents.shape[2] // 2, context_latents.shape[3] // 2))
    ids[latents.shape[1]:, 0] = context_index

    scheduler_config = components["scheduler"].config
    sigmas = shifted_sigmas(num_inference_steps, latents.shape[1], **shift_config(scheduler_config))  # [N + 1]
    num_train_timesteps = scheduler_config.get("num_train_timesteps", 1000)
    guidance_embeds = getattr(transformer.config, "guidance_embeds", True)
    guidance = torch.full((batch,), guidance_scale, dtype=torch.float32) if guidance_embeds else None
    negative = None
    if true_cfg_scale > 1 and negative_prompt is not None:
        negative = encode_prompt(components, [negative_prompt] * batch if isinstance(negative_prompt, str)
                                 else negative_prompt, max_sequence_length=max_sequence_length)

    trajectory = [latents] if keep_trajectory else []
    for i in range(num_inference_steps):
        velocity = predict_velocity(transformer, latents, context, sigmas[i], guidance, pooled, prompt_embeds, ids,
                                    num_train_timesteps)
        if negative is not None:  # true CFG: a second pass with the negative prompt
            negative_velocity = predict_velocity(transformer, latents, context, sigmas[i], guidance, negative[1],
                                                 negative[0], ids, num_train_timesteps)
            velocity = negative_velocity + true_cfg_scale * (velocity - negative_velocity)
        latents = euler_step(latents, velocity, sigmas[i], sigmas[i + 1])  # x += (sigma_next - sigma) v
        if keep_trajectory:
            trajectory.append(latents)

    decoded = decode_image_latents(vae, unpack_latents(latents, latent_h, latent_w))  # [B, 3, H, W]
    return EditResult(decoded, latents, sigmas, trajectory)
