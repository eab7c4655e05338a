"""Prompt encoding: a prompt -> T5 states, a pooled CLIP vector and text position ids.

FLUX reads the instruction twice. CLIP (``tokenizer`` / ``text_encoder``) sees ``prompt``,
always padded or cut to 77 tokens, and only one vector of it is kept: the final hidden
state at the first end-of-text token. T5 (``tokenizer_2`` / ``text_encoder_2``) sees
``prompt_2`` (default: ``prompt``) padded to ``max_sequence_length`` (at most 512) and
keeps every state, padding included, computed without an attention mask. ``text_ids``
are zeros: RoPE positions, not token ids.

``encode_prompt`` rebuilds ``FluxKontextPipeline.encode_prompt`` from these pieces;
``truncation_report`` / ``check_prompt`` say what an encoder would silently drop.
"""

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Mapping

import matplotlib.pyplot as plt
import torch

from .position_ids import text_ids

T5_MAX_SEQUENCE_LENGTH = 512  # FluxKontextPipeline.check_inputs rejects more


# --- inputs -------------------------------------------------------------------------

def as_prompt_list(prompt, name: str = "prompt") -> list[str]:
    """A str or a list of str -> a non-empty list of str (one entry per batch item)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {prompt!r}. "
                         f"Pass e.g. {name}='make the circle blue' or {name}=['make it red', 'make it blue'].")
    return list(prompts)


def check_max_sequence_length(max_sequence_length: int) -> None:
    """FLUX's T5 sequence: 1 to 512 tokens (FluxKontextPipeline rejects more; BFL's dev models use 512)."""
    if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= T5_MAX_SEQUENCE_LENGTH:
        raise ValueError(f"max_sequence_length must be an integer from 1 to {T5_MAX_SEQUENCE_LENGTH} "
                         f"(FluxKontextPipeline rejects more; FLUX's dev models use {T5_MAX_SEQUENCE_LENGTH}), "
                         f"got {max_sequence_length!r}. "
                         f"Use {T5_MAX_SEQUENCE_LENGTH}, the default, or shorten prompt_2.")


def prompts_for_t5(prompts: list[str], prompt_2) -> list[str]:
    """prompt_2 if given, else prompt; like diffusers, an empty prompt_2 ('' or None) means prompt."""
    if not prompt_2:
        return prompts
    prompts_2 = as_prompt_list(prompt_2, "prompt_2")
    if len(prompts_2) != len(prompts):
        raise ValueError(f"prompt_2 has {len(prompts_2)} prompt(s) but prompt has {len(prompts)}: give one "
                         "prompt_2 per prompt (the same order), or leave prompt_2=None to send prompt to T5 too.")
    return prompts_2


# --- tokenizers -----------------------------------------------------------------------

def clip_token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    """[B, 77]: <|startoftext|>, at most 75 prompt tokens, <|endoftext|>, then <|endoftext|> as padding."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def t5_token_ids(tokenizer_2, prompts: list[str], max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """[B, max_sequence_length]: at most L-1 prompt tokens, </s>, then <pad> (id 0) up to L."""
    check_max_sequence_length(max_sequence_length)
    return tokenizer_2(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                       return_tensors="pt").input_ids


# --- encoders -------------------------------------------------------------------------

def pooled_positions(clip_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[B, 77] -> [B]: index of the first end-of-text token (the padding uses the same id)."""
    return (clip_ids == eos_token_id).int().argmax(dim=-1)  # argmax returns the first maximum


@torch.no_grad()  # the text encoders are frozen in FLUX
def clip_pooled(text_encoder, clip_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[B, 77] -> [B, D]: the final hidden state (after final_layer_norm) at the first end-of-text token."""
    device = next(text_encoder.parameters()).device
    clip_ids = clip_ids.to(device)
    states = text_encoder(clip_ids).last_hidden_state  # [B, 77, D], causal attention, final LayerNorm applied
    rows = torch.arange(states.shape[0], device=states.device)
    return states[rows, pooled_positions(clip_ids, eos_token_id)]  # [B, D]


@torch.no_grad()  # the text encoders are frozen in FLUX
def t5_states(text_encoder_2, t5_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [B, L, D]: every T5 state, padding included, with no attention mask."""
    device = next(text_encoder_2.parameters()).device
    return text_encoder_2(t5_ids.to(device)).last_hidden_state  # attention_mask=None: pads are attended to


def check_num_images_per_prompt(num_images_per_prompt: int) -> None:
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be a positive integer (1, 2, ...), got {num_images_per_prompt!r}")


def repeat_per_image(embeddings: torch.Tensor, num_images_per_prompt: int) -> torch.Tensor:
    """[B, ...] -> [B * n, ...], copies of one prompt adjacent: p0, p0, p1, p1 (as the pipeline orders them)."""
    check_num_images_per_prompt(num_images_per_prompt)
    return embeddings.repeat_interleave(num_images_per_prompt, dim=0)


@torch.no_grad()  # the text encoders are frozen in FLUX
def encode_prompt(components: Mapping, prompt, prompt_2=None, *, num_images_per_prompt: int = 1,
                  max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH):
    """FluxKontextPipeline.encode_prompt, rebuilt: (T5 states [B*n, L, D_t5], pooled [B*n, D_clip], text_ids [L, 3]).

    components: a mapping with tokenizer, text_encoder, tokenizer_2, text_encoder_2 (e.g. ``pipe.components``).
    """
    prompts = as_prompt_list(prompt)
    prompts_2 = prompts_for_t5(prompts, prompt_2)
    check_max_sequence_length(max_sequence_length)
    check_num_images_per_prompt(num_images_per_prompt)
    tokenizer, tokenizer_2 = components["tokenizer"], components["tokenizer_2"]
    pooled = clip_pooled(components["text_encoder"], clip_token_ids(tokenizer, prompts), tokenizer.eos_token_id)
    states = t5_states(components["text_encoder_2"], t5_token_ids(tokenizer_2, prompts_2, max_sequence_length))
    ids = text_ids(states.shape[1]).to(device=states.device, dtype=states.dtype)  # [L, 3] zeros
    return repeat_per_image(states, num_images_per_prompt), repeat_per_image(pooled, num_images_per_prompt), ids


def padding_drift(text_encoder_2, tokenizer_2, prompt: str, lengths, reference_length: int = T5_MAX_SEQUENCE_LENGTH
                  ) -> list[float]:
    """How far the prompt's own T5 states move when only the amount of padding changes.

    For each max_sequence_length L: max over the prompt's tokens of |s_L - s_ref| / |s_ref|, where
    s_ref are the states at reference_length. Zero would mean the padding has no influence.
    """
    num_tokens = len(tokenizer_2(prompt).input_ids)  # prompt tokens + </s>
    for length in (*lengths, reference_length):
        check_max_sequence_length(length)
        if length < num_tokens:
            raise ValueError(f"max_sequence_length {length} is shorter than the prompt's {num_tokens} T5 tokens, "
                             "so the prompt itself would change; use lengths of at least " f"{num_tokens}.")
    reference = t5_states(text_encoder_2, t5_token_ids(tokenizer_2, [prompt], reference_length))[0, :num_tokens]
    drifts = []
    for length in lengths:
        states = t5_states(text_encoder_2, t5_token_ids(tokenizer_2, [prompt], length))[0, :num_tokens]  # [n, D]
        drifts.append(((states - reference).norm(dim=-1) / reference.norm(dim=-1)).max().item())
    return drifts


# --- truncation -----------------------------------------------------------------------

def encoder_name(tokenizer) -> str:
    return "CLIP" if "clip" in type(tokenizer).__name__.lower() else "T5"


@dataclass(frozen=True)
class TruncationReport:
    """What one encoder reads of a prompt, and what it silently drops."""
    encoder: str  # "CLIP" or "T5"
    max_length: int  # tokens the encoder reads, special tokens included
    prompt_tokens: int  # tokens of the prompt itself, special tokens excluded
    budget: int  # prompt tokens that fit: max_length minus the special tokens
    kept_text: str  # the part of the prompt the encoder reads
    dropped_text: str  # the rest, as written in the prompt ('' when nothing is dropped)
    dropped_ids: tuple  # the token ids that are dropped
    cut_inside_word: bool = False  # the first dropped token continues a word that is partly kept

    @property
    def truncated(self) -> bool:
        return self.prompt_tokens > self.budget

    def message(self) -> str:
        if not self.truncated:
            return (f"{self.encoder}: {self.prompt_tokens} of {self.budget} prompt tokens used, "
                    "nothing is dropped.")
        inside = " (the cut falls inside a word)" if self.cut_inside_word else ""
        return (f"{self.encoder} reads only the first {self.budget} of the prompt's {self.prompt_tokens} tokens "
                f"and silently drops {self.prompt_tokens - self.budget}{inside}: {self.dropped_text!r}")

    def advice(self) -> str:
        if self.encoder == "CLIP":
            return (f"Shorten `prompt` to at most {self.budget} CLIP tokens (CLIP only gives FLUX one pooled "
                    f"summary vector), and put the full text in `prompt_2`: T5 reads up to "
                    f"{T5_MAX_SEQUENCE_LENGTH - 1} prompt tokens.")
        if self.max_length < T5_MAX_SEQUENCE_LENGTH:
            return (f"Raise max_sequence_length (up to {T5_MAX_SEQUENCE_LENGTH}) or shorten `prompt_2` "
                    f"to at most {self.budget} T5 tokens.")
        return (f"Shorten `prompt_2` to at most {self.budget} T5 tokens: FLUX never reads more than "
                f"{T5_MAX_SEQUENCE_LENGTH} T5 tokens.")


def truncation_report(prompt: str, tokenizer, max_length: int | None = None) -> TruncationReport:
    """Tokenize like the pipeline does and report what falls past ``max_length`` (default: the tokenizer's)."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one string, got {type(prompt).__name__}; check a list one prompt at a time.")
    special = tokenizer.num_special_tokens_to_add()
    limit = tokenizer.model_max_length
    max_length = limit if max_length is None else max_length
    if not isinstance(max_length, int) or not special < max_length <= limit:
        raise ValueError(f"max_length must be an integer from {special + 1} to {limit} for "
                         f"{encoder_name(tokenizer)}, got {max_length!r}")
    encoding = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding.input_ids, encoding.offset_mapping
    budget = max_length - special
    cut = offsets[budget][0] if len(ids) > budget else len(prompt)  # where the first dropped token starts
    inside_word = 0 < cut < len(prompt) and prompt[cut - 1].isalnum() and prompt[cut].isalnum()
    return TruncationReport(encoder=encoder_name(tokenizer), max_length=max_length, prompt_tokens=len(ids),
                            budget=budget, kept_text=prompt[:cut].rstrip(), dropped_text=prompt[cut:].strip(),
                            dropped_ids=tuple(ids[budget:]),
                            cut_inside_word=inside_word)


def check_prompt(prompt: str, tokenizer, *, max_length: int | None = None, strict: bool = False) -> str:
    """Return the text the encoder would drop ('' if none); warn about it, or raise ValueError if strict."""
    report = truncation_report(prompt, tokenizer, max_length)
    if report.truncated:
        if strict:
            raise ValueError(f"{report.message()}. {report.advice()}")
        warnings.warn(f"{report.message()}. {report.advice()}", UserWarning, stacklevel=2)
    return report.dropped_text


@contextlib.contextmanager
def diffusers_warnings():
    """Collect what diffusers logs at WARNING level inside the block (into a list, not onto stderr)."""
    logger = logging.getLogger("diffusers")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    saved_handlers, saved_level = logger.handlers[:], logger.level
    logger.handlers = [Collect()]
    logger.setLevel(logging.WARNING)
    try:
        yield messages
    finally:
        logger.handlers = saved_handlers
        logger.setLevel(saved_level)


# --- looking at tokens ----------------------------------------------------------------

def readable_tokens(tokenizer, ids) -> list[str]:
    """Token strings with visible word markers: CLIP 'blue</w>' -> 'blue_', T5 '▁blue' -> '_blue'."""
    return [t.replace("</w>", "_").replace("\u2581", "_") for t in tokenizer.convert_ids_to_tokens(list(ids))]


def describe_prompt(prompt: str, tokenizer, tokenizer_2, max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH) -> str:
    """Both tokenizations of one prompt as text: tokens, counts, padding, pooled position, what is dropped."""
    check_max_sequence_length(max_sequence_length)
    lines = []
    for tok, length in ((tokenizer, tokenizer.model_max_length), (tokenizer_2, max_sequence_length)):
        report = truncation_report(prompt, tok, length)
        ids = tok(prompt, max_length=length, truncation=True).input_ids
        name = encoder_name(tok)
        lines.append(f"{name}: {len(ids)} of {length} tokens are the prompt's, {length - len(ids)} are padding")
        lines.append("  " + " ".join(readable_tokens(tok, ids)))
        if name == "CLIP":
            lines.append(f"  pooled vector = final state at position {len(ids) - 1} ({tok.eos_token})")
        unknown = sum(i == tok.unk_token_id for i in ids) if name == "T5" else 0
        if unknown:
            lines.append(f"  {unknown} piece(s) are {tok.unk_token}: characters T5's vocabulary cannot spell")
        lines.append("  " + report.message())
    return "\n".join(lines)


TOKEN_COLOURS = {"special": "#d9d9d9", "token": "#fde2c8", "pooled": "#f4a261", "unk": "#e76f51", "pad": "#f7f7f7"}


def token_boxes(tokenizer, prompt: str, length: int) -> list[tuple[str, str]]:
    """(label, kind) per token of one padded tokenization; the padding collapsed into one box."""
    ids = tokenizer(prompt, max_length=length, truncation=True).input_ids
    pooled = len(ids) - 1 if encoder_name(tokenizer) == "CLIP" else None
    boxes = []
    for position, (i, text) in enumerate(zip(ids, readable_tokens(tokenizer, ids))):
        kind = ("pooled" if position == pooled else "unk" if i == tokenizer.unk_token_id
                else "special" if i in tokenizer.all_special_ids else "token")
        boxes.append((f"{text}\n{i}", kind))
    if length > len(ids):
        boxes.append((f"{tokenizer.pad_token} x {length - len(ids)}\n(padding, id {tokenizer.pad_token_id})", "pad"))
    return boxes


def draw_who_sees_whom(num_prompt_tokens: int, length: int):
    """Which token's state may use which token: CLIP's causal mask next to T5 without a mask."""
    positions = torch.arange(length)
    clip_sees = (positions[None, :] <= positions[:, None]).float()  # [L, L], row i sees columns <= i
    t5_sees = torch.ones(length, length)  # no attention mask: every token sees every token, padding included
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, sees, title in ((axes[0], clip_sees, "CLIP: causal attention"),
                            (axes[1], t5_sees, "T5 in FLUX: no attention mask")):
        ax.imshow(sees, cmap="Blues", vmin=0, vmax=1.6)
        ax.axvline(num_prompt_tokens - 0.5, color="#e76f51", lw=1.5)
        ax.axhline(num_prompt_tokens - 0.5, color="#e76f51", lw=1.5)
        ax.set_xlabel("key: the token being looked at")
        ax.set_ylabel("query: the token whose state is computed")
        ax.set_title(title, fontsize=10)
        ax.text(num_prompt_tokens + (length - num_prompt_tokens) / 2, length - 1.5, "padding columns", ha="center",
                fontsize=8, color="#c0392b", bbox=dict(fc="white", ec="none", alpha=0.85))
    eot = num_prompt_tokens - 1
    axes[0].add_patch(plt.Rectangle((-0.5, eot - 0.5), length, 1, fill=False, ec="#f4a261", lw=2.5))
    axes[0].text(length - 0.6, eot, "pooled row", ha="right", va="center", fontsize=8, color="#a0522d")
    fig.suptitle("Dark cell = the row's token attends to the column's token (padding right of / below the red line)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def draw_tokens(prompt: str, tokenizer, tokenizer_2, max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH,
                row_width: float = 14.0):
    """One prompt through both tokenizers: a box per token (string, id), the padding as one box."""
    from matplotlib.patches import Patch

    char_width, gap = 0.095, 0.12
    placed, row, name_rows = [], 0, []  # (x, row, width, label, kind)
    for tok, length in ((tokenizer, tokenizer.model_max_length), (tokenizer_2, max_sequence_length)):
        name_rows.append((row, f"{encoder_name(tok)}\n{length} tokens"))
        x = 0.0
        for label, kind in token_boxes(tok, prompt, length):
            width = char_width * max(len(part) for part in label.split("\n")) + 0.2
            if x + width > row_width:
                x, row = 0.0, row + 1
            placed.append((x, row, width, label, kind))
            x += width + gap
        row += 1.4
    fig, ax = plt.subplots(figsize=(row_width * 0.8 + 1.2, 0.62 * row + 0.9))
    for x, r, width, label, kind in placed:
        ax.add_patch(plt.Rectangle((x, -r - 0.36), width, 0.72, fc=TOKEN_COLOURS[kind], ec="#555555", lw=0.8))
        ax.text(x + width / 2, -r, label, ha="center", va="center", fontsize=7.5, family="monospace")
    for r, name in name_rows:
        ax.text(-0.25, -r, name, ha="right", va="center", fontsize=9, weight="bold")
    legend = [Patch(fc=TOKEN_COLOURS[k], ec="#555555", label=l) for k, l in
              (("token", "prompt token"), ("special", "special token"), ("pooled", "CLIP's pooled position"),
               ("unk", "unknown to the vocabulary"), ("pad", "padding"))]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, fontsize=8, frameon=False)
    ax.set_xlim(-1.6, row_width)
    ax.set_ylim(-row + 0.8, 0.6)
    ax.axis("off")
    ax.set_title(f"{prompt!r} through both tokenizers (token string, id; '_' marks a word boundary)", fontsize=10)
    return fig
