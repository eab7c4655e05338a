"""Solutions to the exercises of 09_lora_training."""

import torch

from ..training.lora_training import LORA_TARGETS


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
