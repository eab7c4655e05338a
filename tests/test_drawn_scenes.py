"""The second renderer: its own drawing, deterministic, scored like the toy world (truth 1, copy 0)."""

import numpy as np
import pytest

from kontext_teach.toy import drawn_scenes as ds
from kontext_teach.toy import toy_world


@pytest.fixture(scope="module")
def pairs():
    return ds.make_drawn_pairs(10)


def test_ground_truth_scores_one_and_copying_scores_zero(pairs):
    assert ds.score_drawn([p.target for p in pairs], pairs)["overall"]["edit_accuracy"] == 1.0
    assert ds.score_drawn([p.source for p in pairs], pairs)["overall"]["edit_accuracy"] == 0.0


def test_wrong_shape_edited_is_caught():
    pair = next(p for p in ds.make_drawn_pairs(20, families=("recolour_one",))
                if len({s.colour for s in p.source_scene.shapes}) < len(p.source_scene.shapes))
    named = pair.instruction.split()[-2] if "colour of" not in pair.instruction else pair.instruction.split()[4]
    other = next(s for s in pair.source_scene.shapes if s.kind != named)
    new_colour = next(s for s in pair.target_scene.shapes if s.kind == named).colour
    wrong = ds.DrawnScene(pair.source_scene.size, pair.source_scene.background, tuple(
        ds.DrawnShape(s.kind, new_colour, toy_world.PALETTE[new_colour], s.x, s.y, s.radius) if s is other else s
        for s in pair.source_scene.shapes))
    assert not ds.edit_correct(ds.draw(wrong), pair)


def test_deterministic_and_unlike_the_training_generator(pairs):
    again = ds.make_drawn_pairs(10)
    assert all(np.array_equal(np.asarray(a.source), np.asarray(b.source)) for a, b in zip(pairs, again))
    radii = [s.radius / s_.size for p in pairs for s, s_ in ((s, p.source_scene) for s in p.source_scene.shapes)]
    low, high = toy_world.RADIUS_RANGE
    assert any(r < low or r > high for r in radii), "some shapes should be sized outside the training range"
    assert any(len({s.colour for s in p.source_scene.shapes}) < len(p.source_scene.shapes) for p in pairs)
    assert all(p.source.size == (toy_world.IMAGE_SIZE,) * 2 and p.source.mode == "RGB" for p in pairs)


def test_instructions_use_the_toy_vocabulary(pairs):
    known = {line for family in ds.FAMILIES for line in toy_world.all_instructions(family)}
    assert {p.instruction for p in pairs} <= known


def test_flip_draws_the_source_upside_down():
    flips = ds.make_drawn_pairs(12, families=ds.LORA_FAMILIES)
    for pair in flips:
        source, target = np.asarray(pair.source, np.float32), np.asarray(pair.target, np.float32)
        assert np.abs(target - source[::-1]).mean() < 1.0  # the same picture, turned over (up to rasterisation)
        assert not np.array_equal(target, source)
        assert pair.instruction in toy_world.all_instructions("flip_upside_down")
    triangles = [(s, t) for p in flips for s, t in zip(p.source_scene.shapes, p.target_scene.shapes)
                 if s.kind == "triangle"]
    assert triangles and all(t.upside_down != s.upside_down for s, t in triangles)
    assert ds.score_drawn([p.target for p in flips], flips)["overall"]["edit_accuracy"] == 1.0
    assert ds.score_drawn([p.source for p in flips], flips)["overall"]["edit_accuracy"] == 0.0


def test_unknown_families_are_refused_with_the_list():
    with pytest.raises(ValueError, match="drawn scenes cover"):
        ds.make_drawn_pair(0, "keep_only")
