"""The flip LoRA shipped with the miniature: diffusers' format, its record matches its recipe, a stock pipeline
loads it, and it flips held-out scenes of both renderers while keeping the old edits."""

import dataclasses
import json

import pytest
import torch
from diffusers import FluxKontextPipeline
from safetensors import safe_open

from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR, load_lora, load_pipeline
from kontext_teach.toy import shipped_lora as sl
from kontext_teach.training import train


def test_the_folder_holds_a_small_diffusers_lora_and_its_record():
    lora = sl.FOLDER / sl.LORA_FILE
    assert lora.stat().st_size < 4 * 2 ** 20, "a few MB at most"
    with safe_open(lora, "pt") as weights:
        keys = list(weights.keys())
        metadata = weights.metadata()
    assert keys and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    adapter = json.loads(metadata["lora_adapter_metadata"])  # rank and alpha travel with the file
    assert adapter["transformer.r"] == sl.RECIPE.rank and adapter["transformer.lora_alpha"] == sl.RECIPE.rank
    record = sl.load_record()
    assert record["edit"] == sl.EDIT == "flip_upside_down"
    assert record["command"].split()[8:] == sl.train_options(sl.RECIPE), "the record's command is the recipe's"
    assert record["train_config"]["steps"] == sl.RECIPE.steps
    recorded = {k: v for k, v in record["recipe"].items() if k != "name"}
    assert recorded == {k: v for k, v in dataclasses.asdict(sl.RECIPE).items() if k != "name"}
    assert sl.meets_targets(record["scores"]), record["scores"]


def test_train_options_give_the_recipes_settings():
    args = train.build_parser().parse_args(["--data", "d", "--output", "o", *sl.train_options(sl.RECIPE)])
    given = train.given_settings(args)
    assert given["steps"] == sl.RECIPE.steps and given["learning_rate"] == sl.RECIPE.learning_rate
    assert given["lr_schedule"] == sl.RECIPE.lr_schedule and given["warmup_steps"] == sl.RECIPE.warmup_steps
    assert given["rank"] == sl.RECIPE.rank and given["targets"] == sl.RECIPE.targets
    with_alpha = sl.train_options(dataclasses.replace(sl.RECIPE, alpha=8.0))
    assert with_alpha[-2:] == ["--alpha", "8"]


@pytest.mark.usefixtures("one_thread")
def test_a_stock_pipeline_flips_held_out_scenes_with_it():
    pipe = FluxKontextPipeline.from_pretrained(EMBEDDED_MODEL_DIR, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    sets = sl.evaluation_sets(32)
    before = sl.measure(pipe, sets, 24)  # 32 pairs each: a guard against regressions; the record holds the bar
    pipe.load_lora_weights(sl.FOLDER)
    after = sl.measure(pipe, sets, 24)
    assert before["flip"] <= 0.1 and before["drawn flip"] <= 0.1
    assert after["flip"] >= 0.8 and after["drawn flip"] >= 0.7, after  # a floor under the record's 100-pair scores
    assert after["old"] >= 0.8 * before["old"], (before, after)


@pytest.mark.usefixtures("one_thread")
def test_build_trains_with_the_command_line_and_writes_the_record(tmp_path):
    tiny = dataclasses.replace(sl.RECIPE, steps=3, new_pairs=8, warmup_steps=1)
    record = sl.build(tmp_path / "flip", tiny, count=2)
    assert (tmp_path / "flip" / sl.LORA_FILE).is_file()
    assert sl.load_record(tmp_path / "flip") == json.loads(json.dumps(record))
    assert record["train_config"]["steps"] == 3 and "--steps 3" in record["command"]
    assert set(record["scores"]["after"]) == {"flip", "old", "drawn flip", "drawn old"}
    pipe = load_lora(load_pipeline(), tmp_path / "flip")
    assert pipe.get_active_adapters()


def test_data_command_writes_a_dataset_the_trainer_reads(tmp_path):
    from kontext_teach.training.edit_pairs import load_pair_folder
    tiny = dataclasses.replace(sl.RECIPE, new_pairs=4)
    pairs = load_pair_folder(sl.write_training_data(tmp_path / "data", tiny))
    assert len(pairs) == 4 + round(4 * tiny.replay / (1 - tiny.replay))
    assert sum("upside down" in p.instruction or "vertically" in p.instruction for p in pairs) == 4


def test_evaluation_sets_nest():
    small, large = sl.evaluation_sets(8, old_count=4), sl.evaluation_sets(16)
    for name, pairs in small.items():
        assert len(pairs) == (8 if "flip" in name else 4)
        assert [p.instruction for p in pairs] == [p.instruction for p in large[name][:len(pairs)]]
    assert {p.family for p in large["drawn old"]} == set(sl.drawn_scenes.FAMILIES)
