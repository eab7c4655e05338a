"""The Kontext training objective: one flow-matching loss on [noisy target; clean context] tokens.

For a pair (condition latents c, target latents x0), a noise level sigma and noise n:

    x_sigma = (1 - sigma) * x0 + sigma * n              (the straight path from x0 to noise)
    v       = transformer([pack(x_sigma); pack(c)], ids = [(0, row, col); (1, row, col)])
    loss    = mean((v[:, :target_tokens] - (n - x0))^2)  (velocity target, context sliced off)

The same function serves the LoRA trainer and the miniature's base training.
"""

from dataclasses import dataclass

import torch

from ..packing import pack_latents
from ..position_ids import kontext_image_ids, text_ids
from .timestep_sampling import noisy_latents


@dataclass
class EditBatch:
    """Cached inputs of a batch of edit pairs (latents already shifted and scaled)."""

    target_latents: torch.Tensor  # [B, 16, h, w]
    context_latents: torch.Tensor  # [B, 16, hc, wc]
    prompt_embeds: torch.Tensor  # [B, T, joint_attention_dim] (T5)
    pooled_prompt_embeds: torch.Tensor  # [B, pooled_projection_dim] (CLIP)

    def to(self, device, dtype=None) -> "EditBatch":
        move = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return EditBatch(*(move(t) for t in (self.target_latents, self.context_latents, self.prompt_embeds,
                                              self.pooled_prompt_embeds)))


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_sigma / d sigma = noise - x0: what the transformer learns to predict."""
    return noise - x0


def kontext_prediction(transformer, batch: EditBatch, noisy_target: torch.Tensor, sigmas: torch.Tensor,
                       guidance: float) -> torch.Tensor:
    """The transformer's velocity for the target tokens only: [B, Lt, 64]."""
    target_tokens = pack_latents(noisy_target)  # [B, Lt, 64]
    context_tokens = pack_latents(batch.context_latents)  # [B, Lc, 64]
    (_, _, h, w), (_, _, hc, wc) = noisy_target.shape, batch.context_latents.shape
    ids = kontext_image_ids((h // 2, w // 2), (hc // 2, wc // 2)).to(noisy_target.device)  # [Lt + Lc, 3]
    batch_size = noisy_target.shape[0]
    prediction = transformer(
        hidden_states=torch.cat([target_tokens, context_tokens], dim=1),  # [B, Lt + Lc, 64]
        timestep=sigmas.to(target_tokens.dtype),  # the pipeline passes t / 1000 = sigma
        guidance=torch.full((batch_size,), guidance, device=noisy_target.device, dtype=torch.float32),
        pooled_projections=batch.pooled_prompt_embeds,
        encoder_hidden_states=batch.prompt_embeds,
        txt_ids=text_ids(batch.prompt_embeds.shape[1]).to(noisy_target.device),
        img_ids=ids,
        return_dict=False,
    )[0]
    return prediction[:, : target_tokens.shape[1]]  # keep the target, drop the context


def kontext_loss(transformer, batch: EditBatch, sigmas: torch.Tensor, noise: torch.Tensor,
                 guidance: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample flow-matching loss [B] (mean over tokens and features), optionally weighted."""
    x0 = batch.target_latents
    noisy = noisy_latents(x0, noise, sigmas)  # [B, 16, h, w]
    prediction = kontext_prediction(transformer, batch, noisy, sigmas, guidance)  # [B, Lt, 64]
    target = pack_latents(velocity_target(x0, noise))  # [B, Lt, 64]
    per_sample = ((prediction.float() - target.float()) ** 2).mean(dim=(1, 2))  # [B]
    return per_sample if weights is None else per_sample * weights
