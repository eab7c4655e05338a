"""What FLUX's transformer costs: parameters per module, FLOPs of one step, and the LoRA targets.

Works on any diffusers ``FluxTransformer2DModel`` (e.g. the full size on the meta device,
``kontext_teach.anatomy.full_size.meta_components()``) or on a ``TransformerConfig``. FLOPs are
counted analytically, matmuls only (2 m n k each), in five categories; ``measured_flops``
checks the formula with ``torch.utils.flop_counter``. The plots show where the weights are
and where the compute goes.
"""

import re

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..transformer import TransformerConfig

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")  # diffusers' double and single blocks


def parameters_per_module(model: nn.Module) -> dict[str, int]:
    """Top-level module name -> parameter count (block lists summed over all their blocks)."""
    counts = {}
    for name, parameter in model.named_parameters():
        top = name.split(".")[0]
        counts[top] = counts.get(top, 0) + parameter.numel()
    return counts


def parameters_per_block_part(block: nn.Module) -> dict[str, int]:
    """Inside one block: owning module (e.g. "attn.to_q", "norm1.linear") -> parameter count."""
    counts = {}
    for name, parameter in block.named_parameters():
        owner = name.rsplit(".", 1)[0]
        counts[owner] = counts.get(owner, 0) + parameter.numel()
    return counts


def block_linear_names(model: nn.Module) -> dict[str, list[str]]:
    """The nn.Linear names inside each block kind, block index removed: the names LoRA targets."""
    names = {kind: [] for kind in BLOCK_LISTS}
    for name, module in model.named_modules():
        match = re.fullmatch(r"(transformer_blocks|single_transformer_blocks)\.\d+\.(.+)", name)
        if match and isinstance(module, nn.Linear) and match[2] not in names[match[1]]:
            names[match[1]].append(match[2])
    return names


FLOP_CATEGORIES = ("attention (QKᵀ, AV)", "q/k/v/out projections", "MLP", "modulation", "embedders + head")
_CATEGORY_OF_OWNER = (  # (pattern on the owning module's name inside a block, category)
    (r"norm1(_context)?\.linear|norm\.linear", "modulation"),
    (r"attn\..*", "q/k/v/out projections"),  # q, k, v, out and the QK RMSNorms
    (r"ff(_context)?\..*|proj_mlp", "MLP"),
)


def parameters_by_category(model: nn.Module) -> dict[str, int]:
    """Parameters of a FluxTransformer2DModel in the FLOP categories (attention itself has none).

    A single block's proj_out reads [attention output; MLP hidden]: its first dim input
    columns (and its bias) count as projections, the other mlp_dim columns as MLP.
    """
    counts = dict.fromkeys(FLOP_CATEGORIES, 0)
    for name, parameter in model.named_parameters():
        match = re.fullmatch(r"(?:transformer_blocks|single_transformer_blocks)\.\d+\.(.+)\.(weight|bias)", name)
        if match is None:
            counts["embedders + head"] += parameter.numel()
        elif match[1] == "proj_out":
            dim = parameter.shape[0]
            counts["q/k/v/out projections"] += dim * dim if match[2] == "weight" else dim
            counts["MLP"] += parameter.numel() - dim * dim if match[2] == "weight" else 0
        else:
            category = next(c for pattern, c in _CATEGORY_OF_OWNER if re.fullmatch(pattern, match[1]))
            counts[category] += parameter.numel()
    return counts


def block_flops(config: TransformerConfig, kind: str, num_text: int, num_image: int) -> dict[str, int]:
    """Matmul FLOPs (2 m n k each) of ONE block for one sample, by category.

    kind "double" or "single"; num_image counts target plus context tokens. Norms, softmax,
    GELU and RoPE (elementwise, a few FLOPs per value) are not counted.
    """
    d, mlp, seq = config.dim, config.mlp_dim, num_text + num_image
    attention_core = 2 * (2 * seq * seq * d)  # QK^T and AV, summed over heads: H * Dh = dim
    if kind == "double":
        return {"attention (QKᵀ, AV)": attention_core,
                "q/k/v/out projections": 2 * seq * d * 4 * d,  # each stream projects only its own tokens
                "MLP": 2 * seq * (2 * d * mlp),
                "modulation": 2 * (2 * d * 6 * d)}  # two streams, 6 vectors each, once per sample
    if kind == "single":
        return {"attention (QKᵀ, AV)": attention_core,
                "q/k/v/out projections": 2 * seq * d * 4 * d,  # q, k, v + the attention columns of proj_out
                "MLP": 2 * seq * (2 * d * mlp),  # proj_mlp + the MLP columns of proj_out
                "modulation": 2 * d * 3 * d}
    raise ValueError(f"kind must be 'double' or 'single', not {kind!r}")


def outer_flops(config: TransformerConfig, num_text: int, num_image: int) -> int:
    """Matmul FLOPs outside the blocks, one sample: input embedders, conditioning MLPs, output head."""
    d = config.dim
    embed = 2 * num_image * config.in_channels * d + 2 * num_text * config.text_dim * d
    conditioning = 2 * (2 * config.timestep_channels * d + 2 * d * d) + 2 * config.pooled_dim * d + 2 * d * d
    head = 2 * d * 2 * d + 2 * num_image * d * config.in_channels
    return embed + conditioning + head


def step_flops(config: TransformerConfig, num_text: int, num_image: int, batch: int = 1) -> dict[str, dict[str, int]]:
    """FLOPs of one transformer call: {part: {category: flops}} for the double blocks, single blocks, the rest."""
    double = block_flops(config, "double", num_text, num_image)
    single = block_flops(config, "single", num_text, num_image)
    return {
        f"{config.num_double_blocks} double blocks": {k: batch * config.num_double_blocks * v for k, v in double.items()},
        f"{config.num_single_blocks} single blocks": {k: batch * config.num_single_blocks * v for k, v in single.items()},
        "embedders + head": {"embedders + head": batch * outer_flops(config, num_text, num_image)},
    }


def total_flops(breakdown: dict[str, dict[str, int]]) -> int:
    return sum(sum(part.values()) for part in breakdown.values())


def flops_by_category(breakdown: dict[str, dict[str, int]]) -> dict[str, int]:
    totals = dict.fromkeys(FLOP_CATEGORIES, 0)
    for part in breakdown.values():
        for category, flops in part.items():
            totals[category] += flops
    return totals


def measured_flops(model: nn.Module, inputs: dict) -> int:
    """FLOPs torch.utils.flop_counter counts for one call of ``model(**inputs)`` (works on the meta device)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return counter.get_total_flops()


CATEGORY_COLOURS = dict(zip(FLOP_CATEGORIES, ("#d7191c", "#fdae61", "#2c7bb6", "#abd9e9", "#999999")))


def plot_flops(breakdowns: dict[str, dict[str, dict[str, int]]], ax=None):
    """Stacked bars, one per setting (e.g. "text-to-image 1024²", "Kontext 1024²"), in TFLOPs per step."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 0.8 + 0.7 * len(breakdowns)))
    labels = list(breakdowns)
    left = np.zeros(len(labels))
    for category in FLOP_CATEGORIES:
        values = np.array([flops_by_category(b)[category] / 1e12 for b in breakdowns.values()])
        ax.barh(labels, values, left=left, color=CATEGORY_COLOURS[category], label=category)
        left += values
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.0f}", va="center", fontsize=9)
    ax.set_xlabel("TFLOPs per transformer call (matmuls, batch 1)")
    ax.set_xlim(0, left.max() * 1.12)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax


def plot_parameters_vs_flops(parameters: dict[str, int], flops: dict[str, int], ax=None):
    """Two stacked 100% bars in the same categories: where the weights are, where the compute goes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 2.2))
    rows = {"parameters": parameters, "FLOPs of one step": flops}
    for y, values in enumerate(rows.values()):
        total, left = sum(values.values()), 0.0
        for category in FLOP_CATEGORIES:
            share = values.get(category, 0) / total
            ax.barh(y, share, left=left, color=CATEGORY_COLOURS[category], label=category if y == 0 else None)
            if share > 0.04:
                ax.text(left + share / 2, y, f"{share:.0%}", ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(rows))
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax

