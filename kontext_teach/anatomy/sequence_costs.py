"""What a Kontext sequence costs: its length, attention pairs and FLOPs at every preferred resolution.

Notebook 04 shows these tables beside the packing step; they use the transformer's cost model
(``transformer_costs``), which is why they live here and not in the packing step module.
"""

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

from ..packing import latent_size
from ..position_ids import token_grid
from ..transformer import TransformerConfig
from .full_size import T5_MAX_TOKENS
from .transformer_costs import FLOP_CATEGORIES, flops_by_category, step_flops, total_flops

REFERENCE_SIZE = (1024, 1024)  # (height, width) costs are compared with
ATTENTION = FLOP_CATEGORIES[0]  # "attention (QKᵀ, AV)" in transformer_costs


@dataclass(frozen=True)
class SequenceLength:
    """The joint sequence the transformer attends over: [text; target; context]."""

    text: int
    target: int
    context: int = 0  # 0: plain text-to-image (FLUX.1-dev), no context image

    @property
    def total(self) -> int:
        return self.text + self.target + self.context

    @property
    def attention_pairs(self) -> int:
        """Query-key scores per head and layer: every token attends to every token."""
        return self.total ** 2


def edit_sequence(height: int, width: int, context_size: tuple[int, int] | None = None,
                  text_tokens: int = T5_MAX_TOKENS) -> SequenceLength:
    """Sequence of an edit whose output is height x width px and whose condition image is
    context_size = (height, width) px; context_size None is text-to-image."""
    context = math.prod(token_grid(*context_size)) if context_size is not None else 0
    return SequenceLength(text=text_tokens, target=math.prod(token_grid(height, width)), context=context)


def attention_share(sequence: SequenceLength, config: TransformerConfig = TransformerConfig()) -> float:
    """Fraction of one transformer call's FLOPs spent in attention scores and sums (QK^T, AV).

    Per block and token the linear layers cost 24 D^2 FLOPs and attention 4 L D, so the share
    is about L / (L + 6 D): attention overtakes the linear layers at L = 6 D tokens.
    """
    breakdown = step_flops(config, sequence.text, sequence.target + sequence.context)
    return flops_by_category(breakdown)[ATTENTION] / total_flops(breakdown)


def preferred_resolution_table(text_tokens: int = T5_MAX_TOKENS) -> list[dict]:
    """One row per preferred Kontext resolution: its tokens, and an edit whose output has the
    size of its condition image, against the same at 1024x1024 and against text-to-image."""
    reference = edit_sequence(*REFERENCE_SIZE, context_size=REFERENCE_SIZE, text_tokens=text_tokens)
    rows = []
    for width, height in PREFERRED_KONTEXT_RESOLUTIONS:  # diffusers lists (width, height)
        edit = edit_sequence(height, width, context_size=(height, width), text_tokens=text_tokens)
        text_to_image = edit_sequence(height, width, text_tokens=text_tokens)
        rows.append(dict(width=width, height=height, latent=latent_size(height, width), tokens=edit.target,
                         sequence=edit, relative_cost=edit.attention_pairs / reference.attention_pairs,
                         cost_vs_text_to_image=edit.attention_pairs / text_to_image.attention_pairs))
    return rows


def format_resolution_table(rows: list[dict]) -> str:
    """The table as aligned text, one row per resolution."""
    lines = [f"{'W x H px':>11} {'latent h x w':>13} {'tokens':>7} {'edit seq':>9} "
             f"{'pairs (M)':>10} {'vs 1024²':>9} {'vs t2i':>7}"]
    for row in rows:
        seq = row["sequence"]
        lines.append(f"{row['width']:>5} x {row['height']:<5}{row['latent'][0]:>7} x {row['latent'][1]:<5}"
                     f"{row['tokens']:>7} {seq.total:>9} {seq.attention_pairs / 1e6:>10.1f} "
                     f"{row['relative_cost']:>8.3f}x {row['cost_vs_text_to_image']:>6.2f}x")
    return "\n".join(lines)


def describe_resolution(width: int, height: int, kontext: bool = True, text_tokens: int = T5_MAX_TOKENS) -> str:
    """What one resolution costs, as the widget shows it (output the size of the condition image)."""
    latent_height, latent_width = latent_size(height, width)
    sequence = edit_sequence(height, width, context_size=(height, width) if kontext else None,
                             text_tokens=text_tokens)
    reference = edit_sequence(*REFERENCE_SIZE, context_size=REFERENCE_SIZE if kontext else None,
                              text_tokens=text_tokens)
    kind = "Kontext edit" if kontext else "text-to-image"
    parts = f"{sequence.text} text + {sequence.target} target" + (f" + {sequence.context} context" if kontext else "")
    share = attention_share(sequence)
    return "\n".join([
        f"{width} x {height} px -> latent 16 x {latent_height} x {latent_width} "
        f"-> {latent_height // 2} x {latent_width // 2} = {sequence.target} tokens of 64 features",
        f"{kind} sequence: {parts} = {sequence.total} tokens",
        f"attention pairs per head and layer: {sequence.attention_pairs / 1e6:.1f} M "
        f"= {sequence.attention_pairs / reference.attention_pairs:.3f} x a 1024 x 1024 {kind}",
        f"share of the full-size transformer's FLOPs spent in attention: {100 * share:.0f} %",
    ])


def draw_sequence_costs(rows: list[dict]):
    """Left: the edit sequence of every preferred resolution, stacked text / target / context.
    Right: attention pairs of that edit and of text-to-image at the same size."""
    labels = [f"{r['width']}x{r['height']}" for r in rows]
    fig, (ax_tokens, ax_cost) = plt.subplots(1, 2, figsize=(12, 5.5), sharey=True,
                                             gridspec_kw=dict(width_ratios=(3, 2)))
    left = [0] * len(rows)
    for part, colour in (("text", "#fdb863"), ("target", "#5e3c99"), ("context", "#b2abd2")):
        sizes = [getattr(r["sequence"], part) for r in rows]
        ax_tokens.barh(labels, sizes, left=left, color=colour, label=part)
        left = [a + b for a, b in zip(left, sizes)]
    ax_tokens.invert_yaxis()
    ax_tokens.set_xlabel("tokens in the joint sequence")
    ax_tokens.set_title("Kontext edit, output = condition size")
    ax_tokens.legend(loc="lower right", fontsize=9, framealpha=1)
    edit = [r["sequence"].attention_pairs / 1e6 for r in rows]
    text_to_image = [e / r["cost_vs_text_to_image"] for e, r in zip(edit, rows)]
    ax_cost.plot(edit, labels, "o", color="#5e3c99", label="Kontext edit")
    ax_cost.plot(text_to_image, labels, "s", color="#fdb863", label="text-to-image, same size")
    ax_cost.set_xlim(0, 1.1 * max(edit))
    ax_cost.grid(axis="x", alpha=0.3)
    ax_cost.set_xlabel("attention pairs per head and layer (millions)")
    ax_cost.set_title("attention pairs, with and without context")
    ax_cost.legend(loc="center left", fontsize=9, framealpha=1)
    fig.suptitle("The 17 preferred Kontext resolutions (width x height px)", fontsize=12)
    fig.tight_layout()
    return fig


def draw_flops(sides: list[int], config: TransformerConfig = TransformerConfig()):
    """FLOPs of one transformer call for square outputs, linear layers vs attention, and the
    share of attention, for Kontext edits (context = output size) and text-to-image."""
    fig, (ax_flops, ax_share) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kontext, style in ((True, "-"), (False, ":")):
        sequences = [edit_sequence(s, s, context_size=(s, s) if kontext else None) for s in sides]
        flops = [flops_by_category(step_flops(config, q.text, q.target + q.context)) for q in sequences]
        linear = [(f["q/k/v/out projections"] + f["MLP"]) / 1e12 for f in flops]
        name = "Kontext edit" if kontext else "text-to-image"
        ax_flops.plot(sides, linear, style, color="#2b83ba", label=f"linear layers, {name}")
        ax_flops.plot(sides, [f[ATTENTION] / 1e12 for f in flops], style, color="#d7191c", label=f"attention, {name}")
        ax_share.plot(sides, [100 * attention_share(q, config) for q in sequences], style, color="#5e3c99", label=name)
    for ax in (ax_flops, ax_share):
        ax.axvline(1024, color="#999999", lw=1, ls="--")
        ax.set_xlabel("output side (px), square")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    ax_flops.set_ylabel("TFLOPs per transformer call")
    ax_flops.set_title("linear layers grow like L, attention like L²")
    ax_share.set_ylabel("attention share of the FLOPs (%)")
    ax_share.axhline(50, color="#999999", lw=1)
    ax_share.set_ylim(0, 100)
    ax_share.set_title(f"attention overtakes the linear layers at L = 6 D = {6 * config.dim} tokens")
    fig.tight_layout()
    return fig
