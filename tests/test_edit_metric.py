"""The edit metric: ground truth scores 1, copying scores 0, wrong edits fail; evaluation runs the real pipeline."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_teach.toy import edit_metric as em
from kontext_teach.toy import toy_world as tw
from kontext_teach.packing import unpack_latents


@pytest.fixture(scope="module")
def pairs():
    return tw.make_pairs("heldout", 12 * len(tw.FAMILIES), tuple(tw.FAMILIES))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_ground_truth_scores_one_and_copying_zero(pairs, size):
    chosen = pairs if size == 64 else tw.make_pairs("heldout", 2 * len(tw.FAMILIES), tuple(tw.FAMILIES), size)
    for pair in chosen:
        truth, copy = em.score_image(pair.target, pair), em.score_image(pair.source, pair)
        assert truth.edit_correct and truth.region_accuracy == 1.0 and truth.psnr == 100.0, pair.family
        assert all(r.fraction == 1.0 for r in truth.regions)
        assert not copy.edit_correct, (pair.family, pair.seed)


def test_summary_rows(pairs):
    families = [p.family for p in pairs]
    truth = em.summarise([em.score_image(p.target, p) for p in pairs], families)
    copy = em.summarise([em.score_image(p.source, p) for p in pairs], families)
    assert [r.family for r in truth] == list(tw.FAMILIES) + ["overall"]
    assert all(r.edit_accuracy == 1.0 and r.count == 12 for r in truth[:-1]) and truth[-1].count == len(pairs)
    assert all(r.edit_accuracy == 0.0 for r in copy)
    assert all(0 < r.region_accuracy < 1 for r in copy)  # copying keeps the untouched background right


def test_regions_name_what_must_be_checked():
    removed = tw.make_pair(2, "remove")
    names = [r.name for r in em.regions(removed.source_scene, removed.target_scene)]
    gone = (set(removed.source_scene.shapes) - set(removed.target_scene.shapes)).pop()
    assert names == [s.name for s in removed.target_scene.shapes] + [f"where the {gone.name} was", "background"]
    recoloured = tw.make_pair(2, "recolour_one")
    assert [r.colour for r in em.regions(recoloured.source_scene, recoloured.target_scene)] == \
        [s.colour for s in recoloured.target_scene.shapes] + ["background"]


def test_regions_are_disjoint_and_inside_the_shapes():
    pair = tw.make_pair(4, "mirror")
    found = em.regions(pair.source_scene, pair.target_scene)
    assert sum(r.mask.astype(int) for r in found).max() == 1
    for region, shape in zip(found, pair.target_scene.shapes):
        assert (tw.coverage(shape, 64)[region.mask] == 1).all()


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_editing_the_wrong_shape_fails(seed):
    pair = tw.make_pair(seed, "recolour_one")
    index = next(i for i, (a, b) in enumerate(zip(pair.source_scene.shapes, pair.target_scene.shapes)) if a != b)
    other = (index + 1) % len(pair.source_scene.shapes)
    shapes = list(pair.source_scene.shapes)
    shapes[other] = dataclasses.replace(shapes[other], colour=pair.target_scene.shapes[index].colour)
    wrong = tw.render(tw.Scene(64, tuple(shapes)))
    score = em.score_image(wrong, pair)
    assert not score.edit_correct and 0 < score.region_accuracy < 1

    removal = tw.make_pair(seed, "remove")
    kept = [s for s in removal.source_scene.shapes if s in removal.target_scene.shapes]
    wrong = tw.render(tw.Scene(64, tuple(s for s in removal.source_scene.shapes if s != kept[0])))
    assert not em.score_image(wrong, removal).edit_correct


def test_a_painted_background_is_checked_in_its_colour():
    pair = tw.make_pair(3, "background_colour")
    found = em.regions(pair.source_scene, pair.target_scene)
    assert found[-1].name == "background" and found[-1].colour == pair.target_scene.background != tw.BACKGROUND
    wrong = tw.render(tw.Scene(64, pair.target_scene.shapes, next(c for c in tw.PALETTE if c not in (
        pair.target_scene.background, *(s.colour for s in pair.target_scene.shapes)))))
    assert not em.score_image(wrong, pair).edit_correct  # another colour
    # the default background keeps its regions as before
    plain = tw.make_pair(3, "remove")
    assert all(r.colour in (tw.BACKGROUND, *tw.PALETTE) for r in em.regions(plain.source_scene, plain.target_scene))


def test_small_noise_and_blur_still_count_as_right():
    rng = np.random.default_rng(0)
    for pair in tw.make_pairs("heldout", 8):
        target = tw.as_array(pair.target)
        noisy = np.clip(target + rng.normal(0, 0.03, target.shape), 0, 1).astype(np.float32)
        blurred = pair.target.resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR)
        assert em.score_image(noisy, pair).edit_correct
        assert em.score_image(blurred, pair).edit_correct
        assert em.score_image(noisy, pair).psnr < 40


def test_classify_colours_and_psnr():
    swatches = np.array([[list(em.COLOUR_TABLE[i]) for i in range(len(em.COLOUR_NAMES))]], np.float32)
    assert em.classify_colours(swatches).tolist() == [list(range(len(em.COLOUR_NAMES)))]
    image = np.full((8, 8, 3), 0.5, np.float32)
    assert em.psnr(image, image) == 100.0
    assert em.psnr(image + 0.1, image) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.1^2)


def test_erode_and_dilate():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    assert em.erode(mask).sum() == 9 and em.erode(mask, 2).sum() == 1
    assert em.dilate(mask).sum() == 49 and em.dilate(em.erode(mask)).sum() == 25
    corner = np.zeros((7, 7), bool)
    corner[0, 0] = True
    assert em.dilate(corner).sum() == 4  # nothing grows in from beyond the border
    assert em.erode(~corner).sum() == 49 - 24 - 1  # the 24 border pixels erode, and the corner's neighbour


@pytest.mark.parametrize("call, message", [
    (lambda p: em.score_image(p.target.resize((32, 32)), p), "generate with height=width=size"),
    (lambda p: em.score_image(p.target, p, min_fraction=0), r"min_fraction must lie in \(0, 1\]"),
    (lambda p: em.psnr(p.target, p.target.resize((32, 32))), "differ in shape"),
    (lambda p: em.regions(p.source_scene, tw.Scene(32, ())), "differ in size"),
    (lambda p: em.summarise([], []), "at least one score"),
    (lambda p: em.evaluate(None, []), "at least one pair"),
    (lambda p: em.evaluate(None, [p, tw.make_pair(0, "mirror", 32)]), "one image size"),
])
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call(tw.make_pair(0, "mirror"))


# --- through the real FluxKontextPipeline -------------------------------------------------

def test_generate_is_the_pipeline_call(pipe):
    pairs = tw.make_pairs("heldout", 3, tuple(tw.FAMILIES))
    ours = em.generate(pipe, pairs, steps=2, batch_size=2, seed=5)
    direct = pipe(image=[p.source for p in pairs[:2]], prompt=[p.instruction for p in pairs[:2]], height=64,
                  width=64, max_area=64 * 64, _auto_resize=False, num_inference_steps=2, guidance_scale=2.5,
                  max_sequence_length=em.TEXT_LENGTH, generator=torch.Generator().manual_seed(5)).images
    assert len(ours) == 3 and all(im.size == (64, 64) for im in ours)
    for a, b in zip(ours[:2], direct):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_generate_with_true_cfg_works_when_the_last_batch_is_smaller(pipe):
    """One negative prompt string goes to every pair of every batch, the short last one included."""
    pairs = tw.make_pairs("heldout", 3, tuple(tw.FAMILIES))
    ours = em.generate(pipe, pairs, steps=2, batch_size=2, seed=5, true_cfg_scale=2.0, negative_prompt="")
    last = pipe(image=[pairs[2].source], prompt=[pairs[2].instruction], negative_prompt=[""], true_cfg_scale=2.0,
                height=64, width=64, max_area=64 * 64, _auto_resize=False, num_inference_steps=2, guidance_scale=2.5,
                max_sequence_length=em.TEXT_LENGTH, generator=torch.Generator().manual_seed(7)).images[0]
    assert len(ours) == 3
    assert np.array_equal(np.asarray(ours[2]), np.asarray(last))


def test_vae_round_trip_is_the_pipelines_encode_and_decode(pipe):
    pair = tw.make_pair(1, "remove")
    ours = em.vae_round_trip(pipe, [pair.target])[0]
    pixels = pipe.image_processor.preprocess(pair.target, 64, 64)
    with torch.no_grad():  # as in the pipeline (autograd changes the CPU kernels' rounding)
        latents = pipe.prepare_latents(pixels, 1, 16, 64, 64, torch.float32, "cpu", None)[1]  # packed, scaled
        unpacked = unpack_latents(latents, 8, 8)  # [1, 16, 8, 8]
        config = pipe.vae.config
        decoded = pipe.vae.decode(unpacked / config.scaling_factor + config.shift_factor).sample
    reference = pipe.image_processor.postprocess(decoded.detach(), output_type="pil")[0]
    # the unpacked latents are laid out differently in memory, so the decoder's sums round differently
    # (about 2e-6): allow one grey level
    assert np.abs(np.asarray(ours).astype(int) - np.asarray(reference).astype(int)).max() <= 1


def test_evaluate_through_the_pipeline(pipe):
    pairs = tw.make_pairs("heldout", 2 * len(tw.FAMILIES), tuple(tw.FAMILIES))
    result = em.evaluate(pipe, pairs, steps=2, batch_size=4)
    assert [r.family for r in result.model] == list(tw.FAMILIES) + ["overall"]
    assert all(r.count == 2 for r in result.model[:-1])
    assert all(r.edit_accuracy == 0.0 for r in result.copy)
    assert len(result.images) == len(pairs) and result.images[0].size == (64, 64)
    assert result.row("model", "mirror").count == 2
    again = em.evaluate(pipe, pairs[:4], steps=2, batch_size=4)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result.images, again.images))
    table = em.format_table(result)
    assert table.splitlines()[0].split()[:2] == ["family", "n"] and len(table.splitlines()) == 2 + len(tw.FAMILIES) + 1


@pytest.mark.parametrize("accuracy, count, expected", [
    (0.5, 10, (0.2366, 0.7634)),  # the textbook Wilson interval of 5 out of 10
    (0.0, 100, (0.0, 0.0370)),  # never wrong about a zero: the interval starts at 0 and is not empty
    (1.0, 100, (0.9630, 1.0)),
    (0.8, 64, (0.6863, 0.8797)),
])
def test_accuracy_interval_is_the_wilson_score_interval(accuracy, count, expected):
    low, high = em.accuracy_interval(accuracy, count)
    assert (low, high) == pytest.approx(expected, abs=1e-4)
    assert low <= accuracy <= high


def test_accuracy_interval_narrows_with_more_pairs():
    widths = [high - low for low, high in (em.accuracy_interval(0.8, n) for n in (16, 64, 256, 1024))]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.06


@pytest.mark.parametrize("accuracy, count, message", [
    (0.8, 0, "positive number of pairs"), (0.8, 6.5, "positive number"), (1.2, 10, r"\[0, 1\]"),
])
def test_accuracy_interval_bad_input_says_what_to_do(accuracy, count, message):
    with pytest.raises(ValueError, match=message):
        em.accuracy_interval(accuracy, count)
