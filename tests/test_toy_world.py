"""The toy editing world: deterministic, split into train and held-out seeds, edits that do what they say."""

import dataclasses
import hashlib
import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from kontext_teach.toy import toy_world as tw
from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR
from kontext_teach.toy.prompt_corpus import prompt_corpus

SEEDS = [0, 1, 7, 123, 1_000_003]
SIZES = [32, 64, 96, 128]


def same_pair(a: tw.EditPair, b: tw.EditPair) -> bool:
    return (a.instruction == b.instruction and a.source_scene == b.source_scene and a.target_scene == b.target_scene
            and np.array_equal(np.asarray(a.source), np.asarray(b.source))
            and np.array_equal(np.asarray(a.target), np.asarray(b.target)))


@pytest.mark.parametrize("family", list(tw.FAMILIES))
@pytest.mark.parametrize("seed", SEEDS)
def test_generator_is_deterministic(seed, family):
    first = tw.make_pair(seed, family)
    # Global random states must not matter: the generator owns its random streams.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    np.random.random(5)
    assert same_pair(first, tw.make_pair(seed, family))


def test_different_seeds_give_different_scenes():
    scenes = {tw.make_pair(seed, "recolour_one").source_scene for seed in range(30)}
    assert len(scenes) == 30


def test_a_seed_shows_one_scene_to_every_family_that_accepts_it():
    sources = [tw.make_pair(0, family).source_scene for family in ("recolour_one", "recolour_all", "remove")]
    assert sources[0] == sources[1] == sources[2]


def test_families_base_and_reserved():
    assert len(tw.BASE_FAMILIES) >= 4 and len(tw.RESERVED_FAMILIES) >= 1
    assert not set(tw.BASE_FAMILIES) & set(tw.RESERVED_FAMILIES)
    assert set(tw.BASE_FAMILIES) | set(tw.RESERVED_FAMILIES) == set(tw.FAMILIES)
    for family, (_, phrasings) in tw.FAMILIES.items():  # the corpus has one phrasing of the newer reserved edits
        assert len(phrasings) >= (3 if family in tw.BASE_FAMILIES + ("flip_upside_down", "everything_gold") else 1), family
    assert list(tw.FAMILIES)[:len(tw.BASE_FAMILIES) + 1] == [*tw.BASE_FAMILIES, "flip_upside_down"]  # seeds the streams


def test_splits_do_not_overlap():
    assert not set(tw.TRAIN_SEEDS) & set(tw.HELDOUT_SEEDS)
    train, heldout = tw.make_pairs("train", 8), tw.make_pairs("heldout", 8)
    assert all(tw.split_of(p.seed) == "train" for p in train)
    assert all(tw.split_of(p.seed) == "heldout" for p in heldout)
    assert [p.family for p in train[:4]] == list(tw.BASE_FAMILIES)
    assert tw.make_pairs("train", 3, start=5)[0].seed == train[5].seed


def test_make_pairs_in_several_processes_equal_one_process():
    one, several = tw.make_pairs("train", 24, start=7), tw.make_pairs("train", 24, start=7, workers=2)
    assert [(p.seed, p.family, p.instruction) for p in one] == [(p.seed, p.family, p.instruction) for p in several]
    assert all(np.array_equal(np.asarray(a.target), np.asarray(b.target)) for a, b in zip(one, several))


def test_make_pairs_base_families_by_default():
    assert {p.family for p in tw.make_pairs("train", 40)} == set(tw.BASE_FAMILIES)


@pytest.mark.parametrize("family", list(tw.FAMILIES))
def test_instructions_are_corpus_sentences_and_tokenize_without_unknowns(family):
    corpus = set(prompt_corpus())
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR / "tokenizer_2")
    instructions = tw.all_instructions(family)
    assert instructions and set(instructions) <= corpus
    for line in instructions:
        ids = tokenizer(line).input_ids
        assert tokenizer.unk_token_id not in ids, line
    for seed in SEEDS:
        assert tw.make_pair(seed, family).instruction in instructions


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_scenes_are_valid(seed, size):
    scene = tw.make_pair(seed, "recolour_one", size).source_scene
    assert scene.size == size and 2 <= len(scene.shapes) <= 3
    assert len({s.kind for s in scene.shapes}) == len(scene.shapes)  # "the circle" names one shape
    assert len({s.colour for s in scene.shapes}) == len(scene.shapes)
    for shape in scene.shapes:
        reach = tw.BOUND * shape.radius
        assert reach <= shape.x <= size - reach and reach <= shape.y <= size - reach
    touched = sum((tw.coverage(s, size) > 0).astype(int) for s in scene.shapes)
    assert touched.max() == 1  # no two shapes share a pixel


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_mirror_and_flip_render_as_the_mirrored_and_flipped_picture(seed, size):
    mirrored = tw.make_pair(seed, "mirror", size)
    source = tw.render_array(mirrored.source_scene)
    assert np.abs(tw.render_array(mirrored.target_scene) - source[:, ::-1]).max() < 1e-3
    flipped = tw.make_pair(seed, "flip_upside_down", size)
    source = tw.render_array(flipped.source_scene)
    assert np.abs(tw.render_array(flipped.target_scene) - source[::-1]).max() < 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_edits_change_what_they_name(seed):
    one = tw.make_pair(seed, "recolour_one")
    changed = [(a, b) for a, b in zip(one.source_scene.shapes, one.target_scene.shapes) if a != b]
    assert len(changed) == 1 and changed[0][0].kind in one.instruction and changed[0][1].colour in one.instruction
    assert changed[0][0].colour != changed[0][1].colour

    everything = tw.make_pair(seed, "recolour_all")
    colours = {s.colour for s in everything.target_scene.shapes}
    assert len(colours) == 1 and colours.pop() in everything.instruction

    removed = tw.make_pair(seed, "remove")
    gone = set(removed.source_scene.shapes) - set(removed.target_scene.shapes)
    assert len(removed.target_scene.shapes) == len(removed.source_scene.shapes) - 1 and len(gone) == 1
    assert gone.pop().kind in removed.instruction

    mirrored = tw.make_pair(seed, "mirror")
    assert any(tw.moves_off_itself(s, t.x, t.y) for s, t in zip(mirrored.source_scene.shapes,
                                                               mirrored.target_scene.shapes))


@pytest.mark.parametrize("seed", SEEDS)
def test_reserved_edits_change_what_they_name(seed):
    painted = tw.make_pair(seed, "background_colour")
    assert painted.target_scene.shapes == painted.source_scene.shapes
    assert painted.target_scene.background in painted.instruction and painted.source_scene.background == tw.BACKGROUND
    assert painted.target_scene.background not in {s.colour for s in painted.source_scene.shapes}
    assert tuple(np.asarray(painted.target)[0, 0]) == tw.PALETTE[painted.target_scene.background]

    kept = tw.make_pair(seed, "keep_only")
    assert len(kept.source_scene.shapes) == 3 and len(kept.target_scene.shapes) == 1
    assert kept.target_scene.shapes[0] in kept.source_scene.shapes
    assert kept.target_scene.shapes[0].kind in kept.instruction

    gold = tw.make_pair(seed, "everything_gold")
    assert "gold" in gold.instruction and {s.colour for s in gold.target_scene.shapes} == {"yellow"}

    swapped = tw.make_pair(seed, "swap_colours")
    (a, b), (c, d) = swapped.source_scene.shapes, swapped.target_scene.shapes
    assert (c.colour, d.colour) == (b.colour, a.colour) and (c.kind, d.kind) == (a.kind, b.kind)


def test_base_pictures_are_unchanged_by_the_background_field():
    scene = tw.make_pair(11, "remove").source_scene
    assert scene.background == tw.BACKGROUND
    assert np.array_equal(tw.render_array(scene), tw.render_array(tw.Scene(scene.size, scene.shapes, "background")))
    assert tuple(np.asarray(tw.render(scene))[0, 0]) == tw.BACKGROUND_RGB


def test_flip_turns_triangles_over():
    pair = next(p for p in (tw.make_pair(s, "flip_upside_down") for s in range(50))
                if any(s.kind == "triangle" for s in p.source_scene.shapes))
    for before, after in zip(pair.source_scene.shapes, pair.target_scene.shapes):
        assert after.upside_down == (before.kind == "triangle")


def test_edges_are_anti_aliased():
    shape = tw.Shape("circle", "red", 20.3, 31.7, 9.0)
    cover = tw.coverage(shape, 64)
    assert ((cover > 0) & (cover < 1)).sum() > 20
    assert abs(cover.sum() - np.pi * 81) < 2  # area of the disc, in pixels
    pixels = np.asarray(tw.render(tw.Scene(64, (shape,))))
    assert len({tuple(p) for p in pixels.reshape(-1, 3)}) > 5  # blended edge colours


def test_images_are_rgb_pil_of_the_requested_size():
    pair = tw.make_pair(3, "remove", 96)
    assert pair.source.mode == "RGB" and pair.source.size == (96, 96) and pair.target.size == (96, 96)
    assert tw.as_array(pair.source).shape == (96, 96, 3)


def test_random_images_for_the_vae():
    images = tw.random_images(np.random.default_rng(0), 5, 32)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, tw.random_images(np.random.default_rng(0), 5, 32))


def test_describe():
    scene = tw.Scene(64, (tw.Shape("circle", "orange", 20.2, 10.0, 8.0), tw.Shape("triangle", "red", 40, 40, 8, True)))
    assert tw.describe(scene) == "an orange circle at (20, 10), a red triangle pointing down at (40, 40)"


@pytest.mark.parametrize("call, message", [
    (lambda: tw.make_pair(0, "rotate"), "unknown edit family"),
    (lambda: tw.make_pair(-1, "mirror"), "non-negative int"),
    (lambda: tw.make_pair(1.5, "mirror"), "non-negative int"),
    (lambda: tw.make_pair(0, "mirror", size=60), "multiple of 16"),
    (lambda: tw.make_pair(0, "mirror", size=16), "at least 32"),
    (lambda: tw.make_pairs("test", 3), "unknown split"),
    (lambda: tw.make_pairs("train", 3, families=()), "at least one edit family"),
    (lambda: tw.make_pairs("train", -2), "non-negative int"),
    (lambda: tw.make_pairs("train", 3, workers=0), "workers must be a positive int"),
    (lambda: tw.split_of(5_000_000), "outside both splits"),
    (lambda: tw.as_array(np.zeros((8, 8))), r"RGB image \[H, W, 3\]"),
    (lambda: tw.as_array(np.full((8, 8, 3), 2.0)), r"\[0, 1\]"),
])
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()



def test_radius_range_widens_the_sizes_and_keeps_the_default_scenes():
    default = tw.make_pairs("train", 4, ("flip_upside_down",))
    same = tw.make_pairs("train", 4, ("flip_upside_down",), radius_range=tw.RADIUS_RANGE)
    assert [p.source_scene for p in default] == [p.source_scene for p in same]
    wide = tw.make_pairs("train", 120, ("flip_upside_down",), radius_range=(0.07, 0.2))
    radii = [s.radius / tw.IMAGE_SIZE for p in wide for s in p.source_scene.shapes]
    assert 0.07 <= min(radii) < tw.RADIUS_RANGE[0] and tw.RADIUS_RANGE[1] < max(radii) <= 0.2
    for bad in [(0.01, 0.1), (0.1, 0.3), (0.15, 0.1)]:
        with pytest.raises(ValueError, match="radius_range"):
            tw.make_pair(0, "mirror", radius_range=bad)


def test_scene_kinds_names_the_kinds_in_kinds_order():
    assert tw.KIND_GROUPS == ("circle+square", "circle+triangle", "square+triangle", "circle+square+triangle")
    for pair in tw.make_pairs("train", 40):
        kinds = tw.scene_kinds(pair.source_scene)
        assert kinds in tw.KIND_GROUPS
        assert sorted(kinds.split("+")) == sorted(shape.kind for shape in pair.source_scene.shapes)


# The digest of a few default pairs, pixels and words. The shipped miniature, its evaluation.json and
# every notebook's pictures rest on these exact pairs: a change to the sampler or the renderer that
# moves them fails here first (recorded 2026-12-02, before scene styles were added, and unchanged after).
DEFAULT_WORLD_DIGEST = "daf0d8d2f97d132f34f5f39fd13459d78cef5b1845735ac909a60b9a440cecbc"


def test_the_default_world_is_pinned():
    digest = hashlib.sha256()
    for pair in tw.make_pairs("train", 8, tw.FAMILIES) + tw.make_pairs("heldout", 4, tw.BASE_FAMILIES, size=96):
        digest.update(pair.instruction.encode())
        digest.update(np.asarray(pair.source).tobytes())
        digest.update(np.asarray(pair.target).tobytes())
    assert digest.hexdigest() == DEFAULT_WORLD_DIGEST
    assert [p.source_scene for p in tw.make_pairs("train", 6, style=tw.DEFAULT_STYLE)] == \
        [p.source_scene for p in tw.make_pairs("train", 6)]


def test_the_wide_style_widens_every_rule():
    style = tw.WIDE_STYLE
    pairs = tw.make_pairs("train", 400, tw.BASE_FAMILIES, style=style)
    scenes = [p.source_scene for p in pairs]
    radii = [s.radius / tw.IMAGE_SIZE for scene in scenes for s in scene.shapes]
    assert style.radius_range[0] <= min(radii) < tw.RADIUS_RANGE[0] and tw.RADIUS_RANGE[1] < max(radii)
    assert max(radii) <= style.radius_range[1]
    same = [scene for scene in scenes if len({s.colour for s in scene.shapes}) < len(scene.shapes)]
    assert 0.2 < len(same) / len(scenes) < 0.4  # same_colour_share 0.3
    assert all(len({s.kind for s in scene.shapes}) == len(scene.shapes) for scene in scenes)  # names stay unique
    shades = [(s.shade, tw.PALETTE[s.colour]) for scene in scenes for s in scene.shapes]
    assert all(shade is not None for shade, _ in shades)
    assert max(abs(a - b) for shade, base in shades for a, b in zip(shade, base)) <= style.shade_jitter
    assert any(shade != base for shade, base in shades)
    near_border = [s for scene in scenes for s in scene.shapes
                   if min(s.x, s.y, tw.IMAGE_SIZE - s.x, tw.IMAGE_SIZE - s.y) < tw.BOUND * s.radius]
    assert near_border and all(min(s.x, s.y, tw.IMAGE_SIZE - s.x, tw.IMAGE_SIZE - s.y)
                               >= style.inside * tw.BOUND * s.radius for s in near_border)
    gaps = [np.hypot(a.x - b.x, a.y - b.y) - tw.BOUND * (a.radius + b.radius)
            for scene in scenes for i, a in enumerate(scene.shapes) for b in scene.shapes[i + 1:]]
    assert style.gap * tw.IMAGE_SIZE <= min(gaps) < tw.GAP * tw.IMAGE_SIZE


def test_edits_of_wide_scenes_still_change_what_they_name():
    for pair in tw.make_pairs("train", 300, tw.FAMILIES, style=tw.WIDE_STYLE):
        assert not np.array_equal(np.asarray(pair.source), np.asarray(pair.target)), (pair.family, pair.seed)
        if pair.family in ("recolour_one", "recolour_all", "everything_gold"):
            changed = [t for s, t in zip(pair.source_scene.shapes, pair.target_scene.shapes) if s.colour != t.colour]
            assert changed and all(t.shade is None for t in changed)  # a new colour is the palette's own
        if pair.family in ("remove", "mirror", "flip_upside_down", "keep_only"):
            assert {s.shade for s in pair.target_scene.shapes} <= {s.shade for s in pair.source_scene.shapes}


def test_a_single_coloured_scene_is_recoloured_and_never_swapped():
    red = tw.Scene(64, (tw.Shape("circle", "red", 16.0, 16.0, 8.0), tw.Shape("square", "red", 44.0, 44.0, 8.0)))
    for seed in range(20):
        target, words = tw.recolour_all(red, np.random.default_rng(seed))
        assert words["colour"] != "red" and {s.colour for s in target.shapes} == {words["colour"]}
    assert tw.swap_colours(red, np.random.default_rng(0)) is None
    yellow = tw.Scene(64, tuple(dataclasses.replace(s, colour="yellow") for s in red.shapes))
    assert tw.everything_gold(yellow, np.random.default_rng(0)) is None


@pytest.mark.parametrize("options, message", [
    (dict(gap=0.5), "scene style"), (dict(inside=0.2), "scene style"), (dict(shade_jitter=80), "scene style"),
    (dict(radius_range=(0.1, 0.3)), "radius_range"),
])
def test_a_bad_scene_style_says_what_to_do(options, message):
    with pytest.raises(ValueError, match=message):
        tw.SceneStyle(**options)


def test_a_style_and_a_radius_range_together_are_refused():
    with pytest.raises(ValueError, match="inside the style"):
        tw.make_pair(0, "mirror", radius_range=(0.07, 0.2), style=tw.WIDE_STYLE)
