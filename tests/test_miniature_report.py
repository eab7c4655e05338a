"""The miniature's report: the binding breakdown groups held-out pairs by the kinds of shape in the scene."""

import pytest

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
