"""Solutions to the exercises of notebook 02_prompt_encoding."""

import re
from typing import Mapping

import torch

from ..prompt_encoding import encode_prompt, truncation_report


def change_from_extra_text(components: Mapping, prompt: str, extra: str,
                           max_sequence_length: int = 512) -> tuple[float, float]:
    """Exercise 1: max |change| of (pooled CLIP vector, T5 states) when ``extra`` is appended to ``prompt``.

    Once ``prompt`` fills CLIP's 75 tokens, the extra text falls past the end-of-text token
    and cannot change the pooled vector (0.0); T5 still reads it.
    """
    t5_a, pooled_a, _ = encode_prompt(components, prompt, max_sequence_length=max_sequence_length)
    t5_b, pooled_b, _ = encode_prompt(components, f"{prompt} {extra}", max_sequence_length=max_sequence_length)
    return (pooled_b - pooled_a).abs().max().item(), (t5_b - t5_a).abs().max().item()


def split_for_encoders(prompt: str, tokenizer) -> tuple[str, str]:
    """Exercise 2: (prompt for CLIP, prompt_2 for T5) from one long instruction.

    CLIP gets the longest run of whole sentences from the start that fits its 75 prompt tokens
    (or, if even the first sentence is too long, the whole words that fit); T5 gets everything.
    """
    if not truncation_report(prompt, tokenizer).truncated:
        return prompt, prompt
    sentences = re.findall(r"[^.!?]+[.!?]*", prompt)
    clip_prompt = ""
    for sentence in sentences:
        candidate = (clip_prompt + sentence).strip()
        if truncation_report(candidate, tokenizer).truncated:
            break
        clip_prompt = candidate
    if not clip_prompt:  # the first sentence alone is too long: keep the whole words that fit
        words = sentences[0].split()
        while words and truncation_report(" ".join(words), tokenizer).truncated:
            words.pop()
        clip_prompt = " ".join(words)
    return clip_prompt, prompt


@torch.no_grad()
def t5_states_with_mask(text_encoder_2, tokenizer_2, prompt: str, max_sequence_length: int) -> torch.Tensor:
    """Exercise 3: T5 states of the prompt's own tokens, computed with an attention mask: [n, D].

    With the mask, the padding is invisible and these states no longer depend on
    max_sequence_length. FLUX's pipelines never do this: the transformer is used with unmasked states.
    """
    inputs = tokenizer_2([prompt], padding="max_length", max_length=max_sequence_length, truncation=True,
                         return_tensors="pt")
    device = next(text_encoder_2.parameters()).device
    states = text_encoder_2(inputs.input_ids.to(device), attention_mask=inputs.attention_mask.to(device))
    n = int(inputs.attention_mask.sum())
    return states.last_hidden_state[0, :n]  # [n, D]
