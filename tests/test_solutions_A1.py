"""Solutions of A1_mini_kontext."""

from PIL import ImageOps

from kontext_teach.toy import edit_metric, toy_world
from kontext_teach.solutions import sA1_mini_kontext as s


def test_mirroring_everything_solves_only_the_mirror_family():
    pairs = toy_world.make_pairs("heldout", 20)
    rows = {row.family: row for row in s.mirror_everything_baseline(pairs)}
    assert rows["mirror"].edit_accuracy == 1.0
    assert all(rows[f].edit_accuracy < 0.5 for f in ("recolour_one", "recolour_all", "remove"))


def test_hardest_family_picks_the_lowest_row():
    rows = [edit_metric.FamilyRow("a", 4, 0.5, 0.8, 20.0), edit_metric.FamilyRow("b", 4, 0.25, 0.7, 19.0),
            edit_metric.FamilyRow("overall", 8, 0.1, 0.1, 1.0)]
    assert s.hardest_family(edit_metric.Evaluation(rows, rows, rows, [])) == "b"
    assert s.hardest_family(edit_metric.Evaluation(rows, rows, rows, []), exclude=("b",)) == "a"


def test_failed_regions():
    pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start, "remove")
    assert s.failed_regions(pair.target, pair) == []
    failed = s.failed_regions(pair.source, pair)
    assert failed and any("was" in name for name in failed)
    assert s.failed_regions(ImageOps.mirror(pair.target), pair)
