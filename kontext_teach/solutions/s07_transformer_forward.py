"""Solutions to the exercises of notebook 07_transformer_forward."""

import torch
from torch import nn

from ..schedule import target_tokens
from ..transformer import TransformerConfig, layer_norm
from ..anatomy.transformer_costs import step_flops, total_flops


# Exercise 1: diffusers' output norm splits (scale, shift), BFL's LastLayer splits (shift, scale).
def norm_out_to_bfl(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers ``norm_out.linear`` [2*dim, dim], [2*dim] -> BFL ``final_layer.adaLN_modulation.1``: swap halves."""
    scale_w, shift_w = weight.chunk(2, dim=0)
    scale_b, shift_b = bias.chunk(2, dim=0)
    return torch.cat([shift_w, scale_w]), torch.cat([shift_b, scale_b])


def bfl_final_norm(x: torch.Tensor, temb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """BFL's LastLayer before its Linear: shift, scale = chunk(Linear(SiLU(temb))); (1 + scale) * LN(x) + shift."""
    shift, scale = nn.functional.linear(nn.functional.silu(temb), weight, bias).chunk(2, dim=-1)
    return (1 + scale[:, None]) * layer_norm(x) + shift[:, None]


# Exercise 2: LoRA parameters for a target list, with PEFT's matching rule.
def matches_target(module_name: str, target: str) -> bool:
    """PEFT's rule for a string target: the whole name, or a suffix after a dot."""
    return module_name == target or module_name.endswith("." + target)


def lora_parameter_count(model: nn.Module, target_modules: list[str], rank: int) -> int:
    """Trainable LoRA parameters: rank * (in + out) for every nn.Linear whose name matches a target."""
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, not {rank}")
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(matches_target(name, t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total


# Exercise 3: what the context image costs.
def context_flops_ratio(config: TransformerConfig, height: int, width: int, num_text: int = 512) -> float:
    """FLOPs of one Kontext call (target + context image of the same size) / one text-to-image call."""
    tokens = target_tokens(height, width)  # raises unless both sides are multiples of 16
    kontext = total_flops(step_flops(config, num_text, 2 * tokens))
    text_to_image = total_flops(step_flops(config, num_text, tokens))
    return kontext / text_to_image
