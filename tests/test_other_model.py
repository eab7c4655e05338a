"""The one switch to another model: every notebook runs on a Kontext folder of other sizes.

The series promises that the same cells run on FLUX.1-Kontext-dev (``KONTEXT_TEACH_MODEL=/path``). The real
weights cannot run here, so this builds a diffusers-layout Kontext folder whose every size differs from the
embedded miniature (heads, head size, RoPE split, block counts, text and VAE widths; random weights, FLUX's VAE
constants), points ``KONTEXT_TEACH_MODEL`` at it and executes every notebook with nbconvert. Outputs are not
compared (the weights are random); a notebook that hard-codes a size of the miniature fails with an error.
"""

import os
import pathlib
import time

import nbformat
import pytest
import torch
from diffusers import AutoencoderKL, FluxKontextPipeline, FluxTransformer2DModel
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR, MODEL_ENV, load_pipeline
from kontext_teach.toy import miniature

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Every size unlike the miniature's (12 heads of 16, RoPE (4, 6, 6), 2 + 3 blocks, text width 64, VAE 16..64).
OTHER_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=32,
                         num_attention_heads=3, joint_attention_dim=48, pooled_projection_dim=32,
                         guidance_embeds=True, axes_dims_rope=(8, 12, 12))
OTHER_T5 = dict(d_model=48, d_kv=24, d_ff=96, num_layers=1, num_heads=2)
OTHER_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
OTHER_VAE = dict(block_out_channels=(8, 16, 32, 32), scaling_factor=0.3611, shift_factor=0.1159)  # FLUX's constants
# Printed lines that prove a notebook ran on the other model, not on the miniature.
EVIDENCE = {"07_transformer_forward": "loaded model: dim = 3 heads x 32 = 96",
            "05_position_ids_rope": "miniature axes (8, 12, 12)"}


def build_other_kontext(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Save a random-weight Kontext of other sizes to ``folder``, with the miniature's tokenizers and scheduler."""
    base = load_pipeline(EMBEDDED_MODEL_DIR, device="cpu")  # the embedded miniature, for its tokenizers
    torch.manual_seed(seed)
    t5 = T5EncoderModel(T5Config(**{**miniature.T5_ENCODER, **OTHER_T5,
                                    "vocab_size": base.text_encoder_2.config.vocab_size}))
    clip = CLIPTextModel(CLIPTextConfig(**{**miniature.CLIP_TEXT, **OTHER_CLIP}))
    pipe = FluxKontextPipeline(transformer=FluxTransformer2DModel(**OTHER_TRANSFORMER),
                               vae=AutoencoderKL(**{**miniature.VAE, **OTHER_VAE}),
                               text_encoder=clip, tokenizer=base.tokenizer,
                               text_encoder_2=t5, tokenizer_2=base.tokenizer_2, scheduler=base.scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return build_other_kontext(tmp_path_factory.mktemp("other-kontext"))


def test_the_other_model_differs_in_every_size(other_model):
    other, mini = load_pipeline(other_model, device="cpu"), load_pipeline(EMBEDDED_MODEL_DIR, device="cpu")
    for key in ("num_attention_heads", "attention_head_dim", "axes_dims_rope", "num_layers", "num_single_layers",
                "joint_attention_dim", "pooled_projection_dim"):
        assert other.transformer.config[key] != mini.transformer.config[key], key
    assert other.vae.config.block_out_channels != mini.vae.config.block_out_channels


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_another_model(path, other_model, monkeypatch):
    monkeypatch.setenv(MODEL_ENV, str(other_model))  # the kernel inherits it: kt.load_pipeline() loads the folder
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = nbformat.read(path, as_version=4)
    executor = ExecutePreprocessor(timeout=600, startup_timeout=300, kernel_name="kontext-teach")  # a busy CPU starts kernels slowly
    start = time.perf_counter()
    try:
        executor.preprocess(notebook, {"metadata": {"path": str(path.parent)}})
    except CellExecutionError as error:
        pytest.fail(f"{path.name} fails on a Kontext of other sizes ({MODEL_ENV}={other_model}):\n{error}")
    print(f"{path.stem}: {time.perf_counter() - start:.1f} s")
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert EVIDENCE.get(path.stem, "") in text, f"{path.name} did not run on the other model"
