"""The build script reproduces the shipped miniature, and its tokenizers are the right ones."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kontext_teach.toy import build_embedded
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR


def test_clip_tokenizer_is_the_real_clip_bpe(pipe):
    tokenizer = pipe.tokenizer
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    # OpenAI CLIP's ids for this prompt: <|startoftext|> a photo of a cat <|endoftext|>
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_t5_tokenizer_has_t5s_id_layout(pipe):
    tokenizer = pipe.tokenizer_2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("make the red circle blue").input_ids
    assert ids[-1] == 1 and 2 not in ids
    assert len(tokenizer) == pipe.text_encoder_2.config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") >= len(tokenizer) - 100


@pytest.mark.parametrize("name, build", [("tokenizer", build_embedded.build_clip_tokenizer),
                                          ("tokenizer_2", build_embedded.build_t5_tokenizer)])
def test_build_reproduces_the_shipped_tokenizers(tmp_path, name, build):
    build().save_pretrained(tmp_path)
    # padding and truncation are the state the tokenizer was last called with, not what it is
    runtime = ("padding", "truncation")
    shipped = json.loads((EMBEDDED_MODEL_DIR / name / "tokenizer.json").read_text())
    built = json.loads((tmp_path / "tokenizer.json").read_text())
    assert {k: v for k, v in built.items() if k not in runtime} == {k: v for k, v in shipped.items() if k not in runtime}


def test_build_reproduces_the_shipped_frozen_text_encoders(tmp_path):
    """The text encoders stay frozen in training: the shipped ones are the build's, rounded to fp16."""
    build_embedded.build_random_pipeline(seed=0).save_pretrained(tmp_path)
    for component in ("text_encoder", "text_encoder_2"):
        built = load_file(tmp_path / component / "model.safetensors")
        shipped = load_file(EMBEDDED_MODEL_DIR / component / "model.safetensors")
        assert built.keys() == shipped.keys()
        assert all(torch.equal(built[k].half().float(), shipped[k].float()) for k in built), component
