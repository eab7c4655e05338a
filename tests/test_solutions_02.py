"""The solutions of notebook 02_prompt_encoding's exercises."""

import pytest
import torch

from kontext_teach import prompt_encoding as pe
from kontext_teach.solutions import s02_prompt_encoding as sol

SENTENCES = ["Replace the red circle in the top left corner with a gold star.",
             "Keep the blue square on the right exactly where it is, with the same size and colour.",
             "Make the background a calm, foggy grey, like an old photo of a quiet street.",
             "Do not change anything else in the picture; the lighting, the shadows and the frame stay the same.",
             "Add a small white cloud above the star, and a thin black line under the square."]
LONG = " ".join(SENTENCES)
RUN_ON = " ".join(["and a red circle"] * 40)  # one sentence, far past 75 CLIP tokens


@pytest.mark.parametrize("length", [256, 512])
def test_text_past_clips_limit_reaches_only_t5(pipe, length):
    pooled_change, t5_change = sol.change_from_extra_text(pipe.components, RUN_ON, "and a gold star", length)
    assert pe.truncation_report(RUN_ON, pipe.tokenizer).truncated
    assert pooled_change == 0.0 and t5_change > 1e-3


@pytest.mark.parametrize("prompt", ["make the circle blue", SENTENCES[0]])
def test_text_within_clips_limit_changes_both(pipe, prompt):
    pooled_change, t5_change = sol.change_from_extra_text(pipe.components, prompt, "and a gold star", 64)
    assert pooled_change > 1e-4 and t5_change > 1e-4


def test_extra_text_is_checked_against_the_pipeline(pipe):
    with torch.no_grad():
        a = pipe.encode_prompt(SENTENCES[1], max_sequence_length=64)
        b = pipe.encode_prompt(SENTENCES[1] + " and a gold star", max_sequence_length=64)
    pooled_change, t5_change = sol.change_from_extra_text(pipe.components, SENTENCES[1], "and a gold star", 64)
    assert pooled_change == (b[1] - a[1]).abs().max().item() and t5_change == (b[0] - a[0]).abs().max().item()


@pytest.mark.parametrize("prompt", [LONG, " ".join(SENTENCES * 2), RUN_ON, "make the circle blue"])
def test_split_for_encoders(pipe, prompt):
    clip_prompt, t5_prompt = sol.split_for_encoders(prompt, pipe.tokenizer)
    assert t5_prompt == prompt
    assert clip_prompt and pe.check_prompt(clip_prompt, pipe.tokenizer, strict=True) == ""
    assert prompt.startswith(clip_prompt)
    rest = prompt[len(clip_prompt):]
    if rest.strip():  # one more sentence (or word) would not fit
        unit = rest.split(" ")[1] if prompt is RUN_ON else rest.split(".")[0] + "."
        assert pe.truncation_report(clip_prompt + " " + unit.strip(), pipe.tokenizer).truncated


def test_split_keeps_whole_sentences(pipe):
    clip_prompt, _ = sol.split_for_encoders(LONG, pipe.tokenizer)
    assert clip_prompt.endswith(".") and clip_prompt in {" ".join(SENTENCES[:k]) for k in range(1, len(SENTENCES))}


@pytest.mark.parametrize("prompt", ["make the circle blue", "remove the square and paint the star gold"])
def test_masked_t5_states_do_not_depend_on_the_padding(pipe, prompt):
    n = len(pipe.tokenizer_2(prompt).input_ids)
    masked = {L: sol.t5_states_with_mask(pipe.text_encoder_2, pipe.tokenizer_2, prompt, L) for L in (n, 64, 512)}
    for L in (64, 512):
        torch.testing.assert_close(masked[L], masked[n], atol=1e-5, rtol=1e-5)
    unmasked = pe.encode_prompt(pipe.components, prompt, max_sequence_length=512)[0][0, :n]
    assert masked[512].shape == unmasked.shape and not torch.allclose(masked[512], unmasked, atol=1e-4)
