"""Prompt encoding rebuilt from the tokenizers and encoders, checked against FluxKontextPipeline.encode_prompt."""

import warnings

import pytest
import torch

from kontext_teach.anatomy import full_size
from kontext_teach import prompt_encoding as pe

SHORT = "make the circle blue"
LONG = " ".join(["put a red circle in the left corner and a blue square on the right"] * 6)  # > 77 CLIP tokens
EXACT = dict(atol=1e-6, rtol=1e-6)


def clip_ids(pipe, prompts):
    return pe.clip_token_ids(pipe.tokenizer, prompts)


# --- equal to diffusers' encode_prompt -------------------------------------------------

@pytest.mark.parametrize("prompt, prompt_2, num_images, length", [
    (SHORT, None, 1, 512),
    ([SHORT, "remove the square"], None, 1, 512),
    (["turn the star gold", "mirror the image", ""], ["flip it left to right", "a red disk", "erase the ring"], 2, 64),
    (LONG, None, 1, 128),
    ("mirror the image", "flip the picture horizontally and keep the colours", 3, 16),
    ([LONG, SHORT], [SHORT, LONG], 2, 77),
    ("", None, 1, 8),
    ([SHORT, "paint the box cyan"], "", 1, 32),  # an empty prompt_2 means prompt, as in diffusers
])
def test_encode_prompt_equals_diffusers(pipe, prompt, prompt_2, num_images, length):
    ours = pe.encode_prompt(pipe.components, prompt, prompt_2, num_images_per_prompt=num_images,
                            max_sequence_length=length)
    with torch.no_grad():
        theirs = pipe.encode_prompt(prompt, prompt_2, num_images_per_prompt=num_images, max_sequence_length=length)
    batch = 1 if isinstance(prompt, str) else len(prompt)
    assert ours[0].shape == (batch * num_images, length, pipe.text_encoder_2.config.d_model)
    assert ours[1].shape == (batch * num_images, pipe.text_encoder.config.hidden_size)
    for mine, library in zip(ours, theirs):
        torch.testing.assert_close(mine, library, **EXACT)
    assert ours[2].dtype == theirs[2].dtype


def test_prompt_2_changes_only_t5(pipe):
    t5_a, pooled_a, _ = pe.encode_prompt(pipe.components, SHORT, max_sequence_length=32)
    t5_b, pooled_b, _ = pe.encode_prompt(pipe.components, SHORT, "remove the square", max_sequence_length=32)
    torch.testing.assert_close(pooled_a, pooled_b, atol=0, rtol=0)
    assert not torch.allclose(t5_a, t5_b)


def test_copies_of_one_prompt_are_adjacent(pipe):
    t5, pooled, _ = pe.encode_prompt(pipe.components, [SHORT, "remove the square"], num_images_per_prompt=2,
                                     max_sequence_length=16)
    assert torch.equal(pooled[0], pooled[1]) and torch.equal(pooled[2], pooled[3])
    assert not torch.equal(pooled[1], pooled[2])
    assert torch.equal(t5[0], t5[1]) and not torch.equal(t5[1], t5[2])


# --- CLIP: which vector is pooled -----------------------------------------------------

@pytest.mark.parametrize("prompts", [[SHORT], [SHORT, LONG, ""], ["a " * 74, "a " * 75, "a " * 76]])
def test_clip_pooled_is_the_state_at_the_first_end_of_text(pipe, prompts):
    ids = clip_ids(pipe, prompts)
    with torch.no_grad():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        ours = pe.clip_pooled(pipe.text_encoder, ids, pipe.tokenizer.eos_token_id)
        after_norm = pipe.text_encoder.final_layer_norm(out.hidden_states[-1])  # [B, 77, D]
    positions = pe.pooled_positions(ids, pipe.tokenizer.eos_token_id)
    lengths = [min(len(pipe.tokenizer(p).input_ids), 77) for p in prompts]
    assert positions.tolist() == [n - 1 for n in lengths]
    torch.testing.assert_close(ours, out.pooler_output, **EXACT)
    torch.testing.assert_close(ours, after_norm[torch.arange(len(prompts)), positions], **EXACT)


def test_pooled_position_equals_the_legacy_argmax_rule(pipe):
    # FLUX's CLIP config has eos_token_id 2, so transformers pools at argmax(ids): the same token,
    # because <|endoftext|> has the largest id and argmax returns the first maximum.
    ids = clip_ids(pipe, [SHORT, LONG, "", "a b c d"])
    assert pipe.tokenizer.eos_token_id == len(pipe.tokenizer) - 1
    assert torch.equal(pe.pooled_positions(ids, pipe.tokenizer.eos_token_id), ids.argmax(dim=-1))


@pytest.mark.parametrize("prompt", [SHORT, "remove the square and make the background gold", ""])
def test_clip_pooled_vector_ignores_the_padding(pipe, prompt):
    unpadded = pipe.tokenizer([prompt], return_tensors="pt").input_ids  # ends at the first end-of-text
    padded = clip_ids(pipe, [prompt])
    with torch.no_grad():
        short = pe.clip_pooled(pipe.text_encoder, unpadded, pipe.tokenizer.eos_token_id)
        full = pe.clip_pooled(pipe.text_encoder, padded, pipe.tokenizer.eos_token_id)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)


# --- T5: padding and no attention mask ------------------------------------------------

@pytest.mark.parametrize("length", [8, 40, 512])
def test_t5_ids_are_padded_with_pad_after_eos(pipe, length):
    ids = pe.t5_token_ids(pipe.tokenizer_2, [SHORT, "remove the square"], length)
    assert ids.shape == (2, length)
    for row, prompt in zip(ids, [SHORT, "remove the square"]):
        real = pipe.tokenizer_2(prompt, max_length=length, truncation=True).input_ids
        assert row[: len(real)].tolist() == real and real[-1] == pipe.tokenizer_2.eos_token_id
        assert (row[len(real):] == pipe.tokenizer_2.pad_token_id).all()


def test_t5_padding_states_are_not_zero_and_depend_on_the_prompt(pipe):
    n = len(pipe.tokenizer_2(SHORT).input_ids)
    with torch.no_grad():
        a = pe.t5_states(pipe.text_encoder_2, pe.t5_token_ids(pipe.tokenizer_2, [SHORT], 64))
        b = pe.t5_states(pipe.text_encoder_2, pe.t5_token_ids(pipe.tokenizer_2, ["remove the square"], 64))
    assert (a[0, n:].norm(dim=-1) > 1e-3).all()
    assert not torch.allclose(a[0, n + 5:], b[0, n + 5:])  # same pad ids, same positions, different states


def test_t5_real_token_states_depend_on_the_amount_of_padding(pipe):
    n = len(pipe.tokenizer_2(SHORT).input_ids)
    with torch.no_grad():
        states = {L: pe.t5_states(pipe.text_encoder_2, pe.t5_token_ids(pipe.tokenizer_2, [SHORT], L))[0, :n]
                  for L in (n, 64, 512)}
    assert not torch.allclose(states[n], states[512], atol=1e-4)
    assert not torch.allclose(states[64], states[512], atol=1e-4)


def test_text_ids_are_zeros(pipe):
    _, _, ids = pe.encode_prompt(pipe.components, SHORT, max_sequence_length=24)
    assert ids.shape == (24, 3) and not ids.any()


# --- full size, on the meta device ----------------------------------------------------

@pytest.mark.parametrize("prompt, num_images, length", [(SHORT, 1, 512), ([SHORT, LONG], 2, 256)])
def test_full_size_shapes_on_meta(pipe, prompt, num_images, length):
    components = {**full_size.meta_components(), "tokenizer": pipe.tokenizer, "tokenizer_2": pipe.tokenizer_2}
    t5, pooled, ids = pe.encode_prompt(components, prompt, num_images_per_prompt=num_images,
                                       max_sequence_length=length)
    batch = (1 if isinstance(prompt, str) else len(prompt)) * num_images
    assert t5.shape == (batch, length, 4096) and pooled.shape == (batch, 768) and ids.shape == (length, 3)
    assert t5.device.type == pooled.device.type == "meta"


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("length", [513, 1024, 0, "512", 64.0])
def test_max_sequence_length_outside_1_to_512_is_rejected(pipe, length):
    with pytest.raises(ValueError, match="max_sequence_length must be an integer from 1 to 512"):
        pe.encode_prompt(pipe.components, SHORT, max_sequence_length=length)


@pytest.mark.parametrize("prompt", [None, [], [SHORT, 3], 42])
def test_prompt_must_be_text(pipe, prompt):
    with pytest.raises(ValueError, match="prompt must be a string or a non-empty list of strings"):
        pe.encode_prompt(pipe.components, prompt)


def test_prompt_2_must_match_the_batch(pipe):
    with pytest.raises(ValueError, match="prompt_2 has 1 prompt.* but prompt has 2"):
        pe.encode_prompt(pipe.components, [SHORT, SHORT], "remove the square")


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_num_images_per_prompt_must_be_positive(pipe, n):
    with pytest.raises(ValueError, match="num_images_per_prompt must be a positive integer"):
        pe.encode_prompt(pipe.components, SHORT, num_images_per_prompt=n)


# --- truncation -----------------------------------------------------------------------

@pytest.mark.parametrize("repeats", [5, 6, 12])
def test_clip_report_names_the_text_diffusers_warns_about(pipe, repeats):
    prompt = " ".join(["Put a red circle in the LEFT corner, and a blue square on the right."] * repeats)
    report = pe.truncation_report(prompt, pipe.tokenizer)
    with pe.diffusers_warnings() as messages, torch.no_grad():
        pipe.encode_prompt(prompt, max_sequence_length=512)
    clip_messages = [m for m in messages if "CLIP" in m]
    assert report.truncated and len(clip_messages) == 1
    assert repr([pipe.tokenizer.decode(list(report.dropped_ids))]) in clip_messages[0]
    ids = pipe.tokenizer(prompt, add_special_tokens=False).input_ids
    assert report.prompt_tokens == len(ids) and report.budget == 75
    assert list(report.dropped_ids) == ids[75:]
    assert prompt.startswith(report.kept_text) and prompt.endswith(report.dropped_text)


@pytest.mark.parametrize("prompt", [SHORT, "", "a " * 75])
def test_nothing_is_dropped_from_short_prompts(pipe, prompt):
    report = pe.truncation_report(prompt, pipe.tokenizer)
    assert not report.truncated and report.dropped_text == "" and report.dropped_ids == ()
    with pe.diffusers_warnings() as messages, torch.no_grad():
        pipe.encode_prompt(prompt, max_sequence_length=512)
    assert not [m for m in messages if "CLIP" in m]


def test_clip_budget_is_75_prompt_tokens(pipe):
    assert not pe.truncation_report("a " * 75, pipe.tokenizer).truncated
    report = pe.truncation_report("a " * 75 + "blue", pipe.tokenizer)
    assert report.truncated and report.dropped_text == "blue"


@pytest.mark.parametrize("length", [8, 16, 100])
def test_t5_report_matches_the_tokenizer_truncation(pipe, length):
    prompt = LONG
    report = pe.truncation_report(prompt, pipe.tokenizer_2, length)
    ids = pipe.tokenizer_2(prompt, add_special_tokens=False).input_ids
    kept = pe.t5_token_ids(pipe.tokenizer_2, [prompt], length)[0].tolist()
    assert report.budget == length - 1 and report.truncated
    assert kept == ids[: length - 1] + [pipe.tokenizer_2.eos_token_id]
    assert list(report.dropped_ids) == ids[length - 1:]
    assert prompt.endswith(report.dropped_text) and prompt.startswith(report.kept_text)


def test_check_prompt_is_silent_for_short_prompts(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pe.check_prompt(SHORT, pipe.tokenizer) == ""
        assert pe.check_prompt(SHORT, pipe.tokenizer_2, max_length=16) == ""


def test_check_prompt_warns_and_returns_the_dropped_text(pipe):
    with pytest.warns(UserWarning, match="CLIP reads only the first 75"):
        dropped = pe.check_prompt(LONG, pipe.tokenizer)
    assert dropped == pe.truncation_report(LONG, pipe.tokenizer).dropped_text and dropped


def test_strict_check_prompt_says_what_to_do(pipe):
    with pytest.raises(ValueError, match="CLIP reads only the first 75 .* put the full text in `prompt_2`"):
        pe.check_prompt(LONG, pipe.tokenizer, strict=True)
    with pytest.raises(ValueError, match="Raise max_sequence_length .* or shorten `prompt_2`"):
        pe.check_prompt(LONG, pipe.tokenizer_2, max_length=16, strict=True)
    with pytest.raises(ValueError, match="FLUX never reads more than 512 T5 tokens"):
        pe.check_prompt(" ".join([LONG] * 6), pipe.tokenizer_2, strict=True)


@pytest.mark.parametrize("tokenizer_name, length", [("tokenizer", 78), ("tokenizer", 2), ("tokenizer_2", 513),
                                                    ("tokenizer_2", 1)])
def test_report_rejects_impossible_lengths(pipe, tokenizer_name, length):
    with pytest.raises(ValueError, match="max_length must be an integer from"):
        pe.truncation_report(SHORT, getattr(pipe, tokenizer_name), length)


def test_report_takes_one_prompt_at_a_time(pipe):
    with pytest.raises(ValueError, match="one prompt at a time"):
        pe.truncation_report([SHORT, SHORT], pipe.tokenizer)


# --- looking at tokens ----------------------------------------------------------------

@pytest.mark.parametrize("prompt, length", [(SHORT, 512), ("Make the circle BLUE!", 16), (LONG, 32)])
def test_describe_prompt_counts(pipe, prompt, length):
    text = pe.describe_prompt(prompt, pipe.tokenizer, pipe.tokenizer_2, length)
    n_clip = min(len(pipe.tokenizer(prompt).input_ids), 77)
    n_t5 = min(len(pipe.tokenizer_2(prompt).input_ids), length)
    assert f"CLIP: {n_clip} of 77 tokens are the prompt's, {77 - n_clip} are padding" in text
    assert f"T5: {n_t5} of {length} tokens are the prompt's, {length - n_t5} are padding" in text
    assert f"pooled vector = final state at position {n_clip - 1}" in text
    assert pe.truncation_report(prompt, pipe.tokenizer).message() in text


def test_draw_tokens_draws_one_box_per_token_plus_padding(pipe):
    import matplotlib.pyplot as plt

    fig = pe.draw_tokens(SHORT, pipe.tokenizer, pipe.tokenizer_2, 32)
    n = len(pipe.tokenizer(SHORT).input_ids) + len(pipe.tokenizer_2(SHORT).input_ids) + 2
    assert len(fig.axes[0].patches) == n
    plt.close(fig)


def test_draw_who_sees_whom_shows_both_rules():
    import matplotlib.pyplot as plt

    fig = pe.draw_who_sees_whom(5, 12)
    clip_image, t5_image = (ax.images[0].get_array() for ax in fig.axes)
    assert clip_image.sum() == 12 * 13 / 2 and t5_image.sum() == 144
    plt.close(fig)


# --- how much the padding moves T5's states -------------------------------------------

def test_padding_drift_is_zero_only_at_the_reference(pipe):
    n = len(pipe.tokenizer_2(SHORT).input_ids)
    drifts = pe.padding_drift(pipe.text_encoder_2, pipe.tokenizer_2, SHORT, [n, 32, 128, 512])
    assert drifts[-1] == 0.0 and all(d > 1e-4 for d in drifts[:-1])
    ref = pe.encode_prompt(pipe.components, SHORT)[0][0, :n]
    at_32 = pe.encode_prompt(pipe.components, SHORT, max_sequence_length=32)[0][0, :n]
    expected = ((at_32 - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()
    assert drifts[1] == pytest.approx(expected, rel=1e-5)


def test_padding_drift_rejects_lengths_shorter_than_the_prompt(pipe):
    with pytest.raises(ValueError, match="shorter than the prompt's"):
        pe.padding_drift(pipe.text_encoder_2, pipe.tokenizer_2, LONG, [8])


def test_report_says_when_the_cut_falls_inside_a_word(pipe):
    prompt = "a " * 74 + "background"  # CLIP: 'background' is one token, so the cut falls before it
    assert not pe.truncation_report(prompt + " blue", pipe.tokenizer).cut_inside_word
    ids = pipe.tokenizer_2("exactly", add_special_tokens=False).input_ids
    assert len(ids) > 2  # the miniature's T5 splits this word, so a cut can land inside it
    report = pe.truncation_report("exactly", pipe.tokenizer_2, max_length=3)
    assert report.cut_inside_word and "inside a word" in report.message()
    assert report.kept_text + report.dropped_text == "exactly"
