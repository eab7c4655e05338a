"""Solutions to the exercises of 09_lora_training."""

import torch

from ..packing import pack_latents
from ..position_ids import kontext_image_ids, text_ids
from ..toy import edit_metric
from ..training.lora_training import LORA_TARGETS, train_lora


def lora_parameter_count(transformer: torch.nn.Module, targets: str, rank: int) -> int:
    """Exercise 1: trainable parameters of a rank-r LoRA: r * (in + out) per targeted Linear.

    Works on the meta device, so it answers for the full 12 B model without memory.
    """
    double, single = LORA_TARGETS[targets]
    count = 0
    for name, module in transformer.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or len(parts) < 3 or not parts[1].isdigit():
            continue
        inner = ".".join(parts[2:])
        wanted = double if parts[0] == "transformer_blocks" else single if parts[0] == "single_transformer_blocks" else ()
        if inner in wanted:
            count += rank * (module.in_features + module.out_features)
    return count


def merged_weight(base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, alpha: float, rank: int) -> torch.Tensor:
    """Exercise 2: the weight a LoRA layer acts with, W + (alpha / r) * B @ A: [out, in]."""
    return base + (alpha / rank) * lora_b @ lora_a


def replay_mix(new_pairs: list, old_pairs: list, replay_fraction: float) -> list:
    """Exercise 3: a training set in which `replay_fraction` of the pairs are old edits (interleaved)."""
    if not 0 <= replay_fraction < 1:
        raise ValueError(f"replay_fraction must lie in [0, 1), got {replay_fraction}")
    old_count = round(len(new_pairs) * replay_fraction / (1 - replay_fraction))
    if old_count > len(old_pairs):
        raise ValueError(f"need {old_count} old pairs for replay_fraction={replay_fraction}, got {len(old_pairs)}")
    mixed, old = [], iter(old_pairs[:old_count])
    for index, pair in enumerate(new_pairs):
        mixed.append(pair)
        while len(mixed) - index - 1 < round((index + 1) * old_count / len(new_pairs)):
            mixed.append(next(old))
    return mixed


def old_edits_after_training(pipe, new_pairs: list, old_pairs: list, heldout_old: list, config, output_dir,
                             replay_fraction: float = 0.0, steps: int = 16) -> float:
    """Exercise 4: train a LoRA on the new pairs with `replay_fraction` old ones mixed in (0: no replay), then
    return the held-out edit accuracy on the old edits. `new_pairs`/`old_pairs` may be EditPairs or cache_pairs()
    lists; `pipe` is changed in place (load a fresh one per run)."""
    train_lora(pipe, replay_mix(new_pairs, old_pairs, replay_fraction), config, output_dir, progress=False)
    evaluation = edit_metric.evaluate(pipe, heldout_old, steps=steps, batch_size=16,
                                      max_sequence_length=config.max_sequence_length)
    return evaluation.row("model").edit_accuracy


def full_prediction(transformer, batch, noisy_target: torch.Tensor, sigmas: torch.Tensor,
                    guidance: float = 1.0) -> torch.Tensor:
    """The transformer's whole output on [noisy target; clean context], before the slice the loss takes:
    [B, target + context tokens, 64]."""
    target_tokens, context_tokens = pack_latents(noisy_target), pack_latents(batch.context_latents)
    (_, _, h, w), (_, _, hc, wc) = noisy_target.shape, batch.context_latents.shape
    return transformer(hidden_states=torch.cat([target_tokens, context_tokens], dim=1),
                       timestep=sigmas.to(target_tokens.dtype),
                       guidance=torch.full((noisy_target.shape[0],), guidance),
                       pooled_projections=batch.pooled_prompt_embeds, encoder_hidden_states=batch.prompt_embeds,
                       txt_ids=text_ids(batch.prompt_embeds.shape[1]),
                       img_ids=kontext_image_ids((h // 2, w // 2), (hc // 2, wc // 2)), return_dict=False)[0]
