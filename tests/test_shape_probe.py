"""The shape-kind probe: it can tell circles from squares from triangles when the input keeps them apart,
it falls to chance when the input does not, and the shipped VAE keeps them apart."""

import pytest
import torch
from diffusers import AutoencoderKL

from kontext_teach.lab.loading import EMBEDDED_MODEL_DIR
from kontext_teach.toy import shape_probe, toy_world


def test_windows_stay_inside_the_picture():
    assert shape_probe.window_corner(2.0, 4, 8) == 0
    assert shape_probe.window_corner(7.6, 4, 8) == 4
    assert shape_probe.window_corner(31.0, 32, 64) == 15


def test_one_window_per_shape_with_its_kind():
    scenes, pictures = shape_probe.scenes_and_pictures("train", 5)
    crops, kinds = shape_probe.shape_windows(pictures, scenes, 1, shape_probe.PIXEL_WINDOW)
    count = sum(len(scene.shapes) for scene in scenes)
    assert crops.shape == (count, 3 * shape_probe.PIXEL_WINDOW ** 2)
    assert kinds.tolist() == [toy_world.KINDS.index(s.kind) for scene in scenes for s in scene.shapes]


def test_the_probe_reads_shapes_from_pixels_and_falls_to_chance_without_them():
    train_scenes, train_pictures = shape_probe.scenes_and_pictures("train", 300)
    test_scenes, test_pictures = shape_probe.scenes_and_pictures("heldout", 80)
    window = shape_probe.PIXEL_WINDOW
    train = shape_probe.shape_windows(train_pictures, train_scenes, 1, window)
    test = shape_probe.shape_windows(test_pictures, test_scenes, 1, window)
    assert shape_probe.kind_probe_accuracy(*train, *test, steps=300) >= 0.85

    def colour_only(crops):  # the mean colour of each window: no outline left, only the (random) colour
        return crops.reshape(len(crops), 3, -1).mean(-1)

    blind = shape_probe.kind_probe_accuracy(colour_only(train[0]), train[1], colour_only(test[0]), test[1], steps=300)
    assert blind < 0.6, f"the probe scored {blind:.2f} without any outline: it reads something other than shape"


def test_the_shipped_vae_keeps_the_shape_kind():
    vae = AutoencoderKL.from_pretrained(EMBEDDED_MODEL_DIR / "vae")
    result = shape_probe.probe_vae(vae, train_scenes=300, heldout_scenes=80, steps=300)
    # measured 2026-12-01 (300 / 100 scenes, 400 steps): pixels 0.94, latents 0.98, round trip 0.93
    assert result.latents >= 0.85, result.summary()
    assert result.round_trip >= 0.8, result.summary()
    assert result.shapes > 150
    assert "chance 0.33" in result.summary()


def test_a_missing_vae_folder_says_what_to_pass(tmp_path):
    with pytest.raises(SystemExit, match="no VAE at"):
        shape_probe.main([str(tmp_path / "nowhere")])


def test_too_few_scenes_are_refused():
    with pytest.raises(ValueError, match="at least 10 scenes"):
        shape_probe.probe_vae(torch.nn.Module(), train_scenes=5)
