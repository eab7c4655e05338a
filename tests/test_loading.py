"""load_pipeline: the embedded miniature, another diffusers-layout folder, and clear errors."""

import json
import shutil

import pytest
import torch
from diffusers import FluxKontextPipeline

from kontext_teach import ModelSourceError, load_pipeline
from kontext_teach.toy.build_embedded import build_random_pipeline
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR, MODEL_ENV, REQUIRED_COMPONENTS


def test_embedded_pipeline_keeps_the_real_structure(pipe):
    assert isinstance(pipe, FluxKontextPipeline)
    t = pipe.transformer.config
    assert t.in_channels == pipe.vae.config.latent_channels * 4 == 64
    assert t.guidance_embeds
    assert sum(t.axes_dims_rope) == t.attention_head_dim and len(t.axes_dims_rope) == 3
    assert t.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert t.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert pipe.vae_scale_factor == 8
    s = pipe.scheduler.config
    assert (s.use_dynamic_shifting, s.base_shift, s.max_shift, s.base_image_seq_len, s.max_image_seq_len) == (
        True, 0.5, 1.15, 256, 4096)
    assert pipe.tokenizer.model_max_length == 77 and len(pipe.tokenizer) == 49408
    assert pipe.transformer.dtype == torch.float32 and pipe.device.type == "cpu"


def test_environment_variable_selects_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_pipeline()


def test_loads_another_diffusers_folder_with_other_sizes(tmp_path, monkeypatch):
    import kontext_teach.toy.miniature as mini

    monkeypatch.setitem(mini.TRANSFORMER, "num_attention_heads", 2)
    monkeypatch.setitem(mini.TRANSFORMER, "num_single_layers", 1)
    other = build_random_pipeline(seed=7)
    other.save_pretrained(tmp_path / "other")
    pipe = load_pipeline(tmp_path / "other", device="cpu")
    assert pipe.transformer.config.num_attention_heads == 2
    assert pipe.transformer.config.num_single_layers == 1
    image = torch.zeros(1, 3, 32, 48)
    out = pipe(image=image, prompt="make it red", height=32, width=48, max_area=32 * 48, _auto_resize=False,
               num_inference_steps=1, output_type="pt").images
    assert out.shape == (1, 3, 32, 48)


def test_missing_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelSourceError, match="hf download"):
        load_pipeline(tmp_path / "missing")


def test_folder_without_model_index(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")


@pytest.mark.parametrize("component", ["transformer", "tokenizer_2", "vae"])
def test_folder_without_a_component_names_it(tmp_path, component):
    folder = tmp_path / "partial"
    shutil.copytree(EMBEDDED_MODEL_DIR, folder)
    shutil.rmtree(folder / component)
    with pytest.raises(ModelSourceError, match=f"missing sub-folders: {component}"):
        load_pipeline(folder)


def test_model_index_without_a_component_names_it(tmp_path):
    folder = tmp_path / "unlisted"
    shutil.copytree(EMBEDDED_MODEL_DIR, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelSourceError, match="does not list: text_encoder"):
        load_pipeline(folder)


def test_hub_id_without_download_permission_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(ModelSourceError, match="downloads are off") as error:
        load_pipeline("black-forest-labs/FLUX.1-Kontext-dev", device="cpu")
    assert "allow_download=True" in str(error.value)


def test_required_components_are_those_of_the_kontext_pipeline():
    index = json.loads((EMBEDDED_MODEL_DIR / "model_index.json").read_text())
    listed = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    assert listed == set(REQUIRED_COMPONENTS)


def test_trained_text_length_comes_from_the_training_record(tmp_path, monkeypatch):
    from kontext_teach.lab.loading import trained_text_length, training_record

    monkeypatch.delenv(MODEL_ENV, raising=False)
    record = json.loads((EMBEDDED_MODEL_DIR / "training_record.json").read_text())
    assert trained_text_length() == record["max_sequence_length"] == training_record()["max_sequence_length"]
    (tmp_path / "full").mkdir()  # no record: a full-size model
    assert trained_text_length(tmp_path / "full") == 512 and training_record(tmp_path / "full") is None
    assert trained_text_length("black-forest-labs/FLUX.1-Kontext-dev") == 512
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "training_record.json").write_text('{"args": {}}')
    with pytest.raises(ModelSourceError, match="no valid max_sequence_length.*--max-sequence-length"):
        trained_text_length(tmp_path / "broken")


def test_model_errors_speak_to_command_line_and_python_users(tmp_path, monkeypatch):
    with pytest.raises(ModelSourceError, match=r"no --model on the command line, source=None in Python") as error:
        load_pipeline(tmp_path / "missing")
    assert "pass source=None" not in str(error.value)
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelSourceError, match=f"comes from \\${MODEL_ENV}; unset it"):
        load_pipeline()


def test_load_lora_loads_without_the_text_encoder_warning(tmp_path):
    import logging

    from kontext_teach.lab.loading import load_lora
    from kontext_teach.training.edit_pairs import EditPair
    from kontext_teach.training.lora_training import TrainConfig, train_lora
    from PIL import Image

    pairs = [EditPair(Image.new("RGB", (32, 32), (200, 30, 30)), "make it blue", Image.new("RGB", (32, 32), (30, 30, 200)))]
    train_lora(load_pipeline(device="cpu"), pairs, TrainConfig(steps=1, rank=2, max_sequence_length=16), tmp_path,
               progress=False)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    library, lora_logger = logging.getLogger("diffusers"), logging.getLogger("diffusers.loaders.lora_base")
    level = library.level
    library.setLevel(logging.WARNING)
    lora_logger.addHandler(handler)
    try:
        load_pipeline(device="cpu").load_lora_weights(tmp_path)  # diffusers' own call warns
        assert any(m.startswith("No LoRA keys associated to CLIPTextModel") for m in seen)
        seen.clear()
        pipe = load_lora(load_pipeline(device="cpu"), tmp_path)
    finally:
        lora_logger.removeHandler(handler)
        library.setLevel(level)
    assert seen == [] and len(pipe.transformer.peft_config) == 1  # loaded (as adapter "default_0")
