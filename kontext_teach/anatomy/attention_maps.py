"""Attention maps of the joint attention: where a target token looks, in [text; target; context].

Every block of FLUX's transformer runs one softmax over the concatenated sequence, so one row
of its [L, L] probability matrix says how much a query token attends to each text token, each
target token and each context token. ``TokenLayout`` knows where each kind sits;
``attention_maps`` cuts a row into a bar over the text and heat maps over the two grids;
``attention_shares`` sums each kind per head. The probabilities come from
``KontextTransformer(..., return_attention=True)`` (kontext_teach.transformer).
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in the joint sequence [text; target; context]."""

    num_text: int
    target_grid: tuple  # (rows, cols) of packed target tokens
    context_grid: tuple | None = None  # (rows, cols) of context tokens; None for text-to-image

    @property
    def num_target(self) -> int:
        return self.target_grid[0] * self.target_grid[1]

    @property
    def num_context(self) -> int:
        return 0 if self.context_grid is None else self.context_grid[0] * self.context_grid[1]

    @property
    def length(self) -> int:
        return self.num_text + self.num_target + self.num_context

    def slices(self) -> dict[str, slice]:
        text_end, target_end = self.num_text, self.num_text + self.num_target
        return {"text": slice(0, text_end), "target": slice(text_end, target_end),
                "context": slice(target_end, self.length)}


def attention_maps(probs: torch.Tensor, layout: TokenLayout, row: int, col: int, head: int | None = None,
                   sample: int = 0) -> dict[str, torch.Tensor]:
    """Where the target token at (row, col) looks: its attention probabilities split by token kind.

    probs: [B, H, L, L] from one block; head None averages the heads. Returns "text" [Lt],
    "target" [rows, cols] and, with a context image, "context" [rows, cols]; together they sum to 1.
    """
    if probs.ndim != 4 or probs.shape[-1] != layout.length or probs.shape[-2] != layout.length:
        raise ValueError(f"probs has shape {tuple(probs.shape)}; expected [batch, heads, {layout.length}, "
                         f"{layout.length}] for {layout}")
    rows, cols = layout.target_grid
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"target token (row {row}, col {col}) is outside the {rows}x{cols} target grid")
    if head is not None and not 0 <= head < probs.shape[1]:
        raise ValueError(f"head {head} does not exist: this block has heads 0..{probs.shape[1] - 1} (None = mean)")
    per_head = probs[sample, :, layout.num_text + row * cols + col]  # [H, L]
    weights = per_head.mean(dim=0) if head is None else per_head[head]  # [L]
    parts = layout.slices()
    maps = {"text": weights[parts["text"]], "target": weights[parts["target"]].reshape(rows, cols)}
    if layout.context_grid is not None:
        maps["context"] = weights[parts["context"]].reshape(layout.context_grid)
    return maps


def attention_shares(probs: torch.Tensor, layout: TokenLayout, sample: int = 0) -> dict[str, torch.Tensor]:
    """Share of attention that target tokens give to text / target / context tokens, per head: {kind: [H]}."""
    parts = layout.slices()
    from_target = probs[sample, :, parts["target"]]  # [H, Ltarget, L]
    return {kind: from_target[..., part].sum(dim=-1).mean(dim=-1) for kind, part in parts.items()
            if part.stop > part.start}


def plot_attention_maps(maps: dict[str, torch.Tensor], row: int, col: int, text_labels: list[str] | None = None,
                        title: str = "", axes=None):
    """Bars over text tokens, heat maps over the target and context grids; the query token is marked."""
    kinds = [kind for kind in ("text", "target", "context") if kind in maps]
    if axes is None:
        _, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.6),
                               gridspec_kw=dict(width_ratios=[1.5] + [1] * (len(kinds) - 1)))
    text = maps["text"].detach().float().cpu().numpy()
    axes[0].bar(range(len(text)), text, color="#e08214")
    axes[0].set_xticks(range(len(text)))
    axes[0].set_xticklabels(text_labels or [str(i) for i in range(len(text))], rotation=70, fontsize=7)
    axes[0].set_title(f"text tokens: {text.sum():.0%} of the attention", fontsize=10)
    axes[0].set_ylabel("attention probability")
    for ax, kind in zip(axes[1:], kinds[1:]):
        grid = maps[kind].detach().float().cpu().numpy()
        image = ax.imshow(grid, cmap="viridis")
        plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if grid.shape[0] > row and grid.shape[1] > col:
            ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_title(f"{kind} tokens: {grid.sum():.0%}", fontsize=10)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    if title:
        axes[0].figure.suptitle(title, fontsize=11)
    axes[0].figure.tight_layout()
    return axes



def plot_joint_attention(probs: torch.Tensor, layout: TokenLayout, head: int | None = None, sample: int = 0, ax=None):
    """The full [L, L] attention matrix of one block (rows: queries, columns: keys), blocks of token kinds marked."""
    matrix = probs[sample].mean(dim=0) if head is None else probs[sample, head]  # [L, L]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 5))
    image = ax.imshow(matrix.detach().float().cpu().numpy(), cmap="magma")
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    parts = {kind: part for kind, part in layout.slices().items() if part.stop > part.start}
    for part in list(parts.values())[1:]:
        ax.axhline(part.start - 0.5, color="white", lw=1)
        ax.axvline(part.start - 0.5, color="white", lw=1)
    centres = [(part.start + part.stop - 1) / 2 for part in parts.values()]
    ax.set_xticks(centres)
    ax.set_xticklabels(list(parts))
    ax.set_yticks(centres)
    ax.set_yticklabels(list(parts), rotation=90, va="center")
    ax.set_xlabel("key (looked at)")
    ax.set_ylabel("query (looking)")
    return ax

