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


# --- the transformer's tokens ----------------------------------------------------------------

def test_token_labels_name_what_covers_most_of_each_token():
    scene = toy_world.Scene(64, (toy_world.Shape("square", "red", 8.0, 8.0, 6.0),  # inside token 0
                                 toy_world.Shape("circle", "blue", 32.0, 40.0, 6.0)))  # across tokens 9 and 10
    labels = shape_probe.token_labels([scene], (4, 4))  # [1, 16]
    assert labels.shape == (1, 16)
    assert labels[0, 0] == shape_probe.CLASSES.index("square")
    assert labels[0, 9] == labels[0, 10] == shape_probe.CLASSES.index("circle")
    assert labels[0, 5] == 0 and labels[0, 15] == 0
    sliver = toy_world.Scene(64, (toy_world.Shape("circle", "blue", 14.0, 8.0, 2.5),))  # 1 % of token 0's pixels
    assert shape_probe.token_labels([sliver], (4, 4))[0, 1] == 0  # under MIN_KIND_SHARE: background


@pytest.fixture(scope="module")
def probe_data(pipe):
    from kontext_teach.toy import mini_training
    pairs = toy_world.make_pairs("heldout", 5, families=("recolour_one",))
    return mini_training.prepare_data(pipe, pipe.vae, pairs, 24, torch.device("cpu"))


def test_block_states_are_the_context_tokens_after_every_block_and_leave_no_hook(pipe, probe_data):
    transformer = pipe.transformer
    states = shape_probe.block_states(transformer, probe_data, sigma=0.9, guidance=2.5)
    assert list(states) == ["latents", "double 0", "double 1", *(f"single {i}" for i in range(4))]
    assert torch.equal(states["latents"], probe_data.sources)
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    assert states["single 3"].shape == (5, 16, width)
    seen = {}
    hook = transformer.single_transformer_blocks[3].register_forward_hook(lambda m, a, out: seen.update(x=out[1]))
    again = shape_probe.block_states(transformer, probe_data, sigma=0.9, guidance=2.5)  # same noise seed
    hook.remove()
    assert torch.allclose(again["single 3"], seen["x"][:, -16:].float())
    assert not any(block._forward_hooks for block in [*transformer.transformer_blocks,
                                                      *transformer.single_transformer_blocks])
    other = shape_probe.block_states(transformer, probe_data, sigma=0.2, guidance=2.5)
    assert not torch.allclose(other["double 0"], states["double 0"])  # the noise level reaches the tokens


def test_the_block_probe_scores_every_stage(pipe):
    result = shape_probe.probe_blocks(pipe, train_pairs=60, heldout_pairs=20, steps=50, guidance=2.5)
    assert result.stages[0] == "latents" and len(result.stages) == 7
    assert all(0.0 <= value <= 1.0 for value in (*result.kinds, *result.look_alikes))
    assert result.tokens > 10
    assert "circle or square" in result.summary() and "single 3" in result.summary()
    with pytest.raises(ValueError, match="at least 10 pairs"):
        shape_probe.probe_blocks(pipe, train_pairs=5)


def test_a_missing_transformer_folder_says_what_to_pass(tmp_path):
    vae = AutoencoderKL.from_pretrained(EMBEDDED_MODEL_DIR / "vae")
    with pytest.raises(SystemExit, match="pass --transformer"):
        shape_probe.load_probe_pipeline(EMBEDDED_MODEL_DIR, vae, tmp_path / "nowhere")
