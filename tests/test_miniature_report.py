"""The miniature's report: the binding breakdown groups held-out pairs by the kinds of shape in the scene."""

import pytest
import torch

from kontext_teach.toy import miniature_report as mr
from kontext_teach.toy import toy_world as tw


def test_kind_groups_are_every_scene_with_two_or_three_kinds():
    assert mr.KIND_GROUPS == ("circle+square", "circle+triangle", "square+triangle", "circle+square+triangle")


@pytest.mark.parametrize("family", mr.BINDING_FAMILIES)
def test_pairs_by_kinds_gives_held_out_pairs_of_each_group(family):
    groups = mr.pairs_by_kinds(family, 3)
    assert list(groups) == list(mr.KIND_GROUPS)
    for group, pairs in groups.items():
        assert len(pairs) == 3
        for pair in pairs:
            assert pair.family == family and tw.split_of(pair.seed) == "heldout"
            assert sorted(group.split("+")) == sorted(shape.kind for shape in pair.source_scene.shapes)
    seeds = [pair.seed for pairs in groups.values() for pair in pairs]
    assert len(set(seeds)) == len(seeds)


def test_pairs_by_kinds_says_when_the_seeds_run_out():
    with pytest.raises(RuntimeError, match="did not give"):
        mr.pairs_by_kinds("remove", 5, limit=10)


def test_the_report_measures_binding_and_the_cli_sizes_it(capsys):
    assert "binding" in mr.PARTS
    with pytest.raises(SystemExit):
        mr.main(["--help"])
    assert "--group-pairs" in capsys.readouterr().out


def test_the_probes_part_asks_the_vae_then_each_model_block_by_block(pipe):
    from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR
    from kontext_teach.toy import guidance

    assert "probes" in mr.PARTS
    teacher = guidance.teacher_pipeline(pipe, EMBEDDED_MODEL_DIR)
    with torch.no_grad():  # as report() calls it: the probes still train
        result = mr.probes(pipe, teacher, scenes=60, pairs=40, vae_steps=100)
    assert set(result) == {"vae", "student", "teacher"}
    assert result["vae"]["shapes"] > 20 and 0 <= result["vae"]["latents"] <= 1
    for model in ("student", "teacher"):
        assert result[model]["stages"][0] == "latents" and len(result[model]["stages"]) == 7
        assert result[model]["look_alikes"][0] == result["student"]["look_alikes"][0]  # same input tokens
    assert result["student"]["look_alikes"][1:] != result["teacher"]["look_alikes"][1:]  # two models
