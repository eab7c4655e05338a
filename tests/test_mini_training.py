"""The training recipe: structural configs, the Kontext objective against the pipeline, a short run that learns."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from safetensors import safe_open

from kontext_teach import load_pipeline
from kontext_teach.toy import miniature
from kontext_teach.toy import mini_training as mt
from kontext_teach.toy import toy_world as tw
from kontext_teach.toy.edit_metric import TEXT_LENGTH
from kontext_teach.position_ids import kontext_image_ids, text_ids

TINY_VAE = (8, 8, 16, 16)


def tiny_transformer(seed=0, text_dim=64, pooled_dim=64):
    torch.manual_seed(seed)
    return FluxTransformer2DModel(**mt.transformer_config(heads=2, head_dim=16, double_blocks=1, single_blocks=1,
                                                          rope_axes=(4, 6, 6), text_dim=text_dim,
                                                          pooled_dim=pooled_dim))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_data(pipe):
    """16 training pairs encoded with the shipped (random) VAE and text encoders."""
    return mt.prepare_data(pipe, pipe.vae, tw.make_pairs("train", 16), TEXT_LENGTH, torch.device("cpu"))


# --- configs keep FLUX's structure ---------------------------------------------------------

@pytest.mark.parametrize("heads, head_dim, axes", [(12, 16, (4, 6, 6)), (6, 32, (8, 12, 12)), (3, 64, (16, 24, 24))])
def test_transformer_config_keeps_the_structure(heads, head_dim, axes):
    config = mt.transformer_config(heads=heads, head_dim=head_dim, double_blocks=2, single_blocks=3, rope_axes=axes,
                                   text_dim=64, pooled_dim=64)
    for key in ("in_channels", "patch_size", "guidance_embeds", "out_channels"):
        assert config[key] == miniature.TRANSFORMER[key]
    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    assert model.x_embedder.in_features == 64 and model.proj_out.out_features == 64
    assert model.x_embedder.out_features == heads * head_dim
    assert len(model.transformer_blocks) == 2 and len(model.single_transformer_blocks) == 3


@pytest.mark.parametrize("channels", [(16, 32, 64, 64), (8, 8, 16, 16), (32, 64, 128, 128)])
def test_vae_config_keeps_the_structure(channels):
    config = mt.vae_config(channels, 2)
    assert config["latent_channels"] == 16 and len(config["block_out_channels"]) == 4
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8


@pytest.mark.parametrize("call, message", [
    (lambda: mt.vae_config((16, 32, 64)), "4 widths"),
    (lambda: mt.vae_config((16, 32, 64, 60)), "multiple of 8"),
    (lambda: mt.vae_config((16, 32, 64, 64), 0), "layers_per_block"),
    (lambda: mt.transformer_config(heads=4, head_dim=16, double_blocks=1, single_blocks=1, rope_axes=(4, 6, 8),
                                   text_dim=64, pooled_dim=64), "sum to the head dim 16"),
    (lambda: mt.transformer_config(heads=4, head_dim=15, double_blocks=1, single_blocks=1, rope_axes=(3, 6, 6),
                                   text_dim=64, pooled_dim=64), "positive even"),
    (lambda: mt.transformer_config(heads=4, head_dim=16, double_blocks=0, single_blocks=1, rope_axes=(4, 6, 6),
                                   text_dim=64, pooled_dim=64), "both kinds of block"),
    (lambda: mt.check_limits(None, None), "step limit, a time budget"),
    (lambda: mt.parse_args(["--out", "x", "--size", "40"]), "multiple of 16"),
    (lambda: mt._ints("16;32"), "comma-separated"),
])
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_asking_for_a_missing_gpu_says_what_to_do():
    with pytest.raises(ValueError, match="use --device cpu"):
        mt.pick_device("cuda")


def test_default_device_is_automatic():
    assert mt.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- schedule, EMA, rounding -------------------------------------------------------------

def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert mt.learning_rate(1.0, 0, 0.0, 10) == pytest.approx(0.1)
    assert mt.learning_rate(1.0, 9, 0.0, 10) == pytest.approx(1.0)
    assert mt.learning_rate(1.0, 500, 0.5, 10) == pytest.approx(0.55)
    assert mt.learning_rate(1.0, 900, 1.0, 10) == pytest.approx(0.1)


def test_progress_takes_the_limit_reached_first():
    assert mt.progress(50, 100, 10.0, None) == 0.5
    assert mt.progress(50, 100, 45.0, 60.0) == 0.75
    assert mt.progress(50, None, 90.0, 60.0) == 1.0


def test_ema_update_and_decay():
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * a + 0.1 * b for a, b in zip(ema.parameters(), model.parameters())]
    mt.ema_update(ema, model, 0.9)
    assert all(torch.allclose(a, e) for a, e in zip(ema.parameters(), expected))
    assert mt.ema_decay_at(0, 0.999) == pytest.approx(0.1) and mt.ema_decay_at(10**6, 0.999) == 0.999


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_round_weights_makes_the_module_what_its_saved_copy_computes(dtype):
    torch.manual_seed(0)
    module = torch.nn.Linear(8, 8)
    mt.round_weights(module, dtype)
    assert all(torch.equal(p, p.to(dtype).float()) for p in module.parameters())
    assert module.weight.dtype == torch.float32


# --- data and objective against the pipeline ---------------------------------------------

def test_images_are_preprocessed_like_the_pipeline(pipe):
    pair = tw.make_pair(3, "mirror")
    ours = mt.to_model_images(np.asarray(pair.source)[None])
    assert torch.equal(ours, pipe.image_processor.preprocess(pair.source, 64, 64))


def test_encoded_data_is_what_the_pipeline_feeds_the_transformer(pipe, tiny_data):
    pairs = tw.make_pairs("train", 16)
    pixels = pipe.image_processor.preprocess([p.source for p in pairs[:3]], 64, 64)
    _, context, latent_ids, image_ids = pipe.prepare_latents(pixels, 3, 16, 64, 64, torch.float32, "cpu", None)
    three = mt.prepare_data(pipe, pipe.vae, pairs[:3], TEXT_LENGTH, torch.device("cpu"))  # same batch: same numerics
    assert torch.equal(three.sources, context)
    assert torch.allclose(tiny_data.sources[:3], context, atol=1e-4)  # batched 16 at a time
    states, pooled, _ = pipe.encode_prompt(prompt=pairs[5].instruction, prompt_2=None, device="cpu",
                                           max_sequence_length=TEXT_LENGTH)
    row = tiny_data.prompt_index[5]
    assert torch.allclose(tiny_data.prompt_embeds[row], states[0], atol=1e-5)  # encoded in one batch of all
    assert torch.allclose(tiny_data.pooled_embeds[row], pooled[0], atol=1e-5)
    assert tiny_data.grid == (4, 4) and tiny_data.targets.shape == (16, 16, 64)
    ours = kontext_image_ids(tiny_data.grid, tiny_data.grid)
    assert torch.equal(ours, torch.cat([latent_ids, image_ids]))  # context first coordinate 1


def test_kontext_loss_is_mse_on_the_target_tokens(tiny_data):
    transformer = tiny_transformer()
    recorded = {}

    def record(module, args, kwargs, output):
        recorded.update(kwargs, output=output[0])

    handle = transformer.register_forward_hook(record, with_kwargs=True)
    x0, context = tiny_data.targets[:4], tiny_data.sources[:4]
    rows = tiny_data.prompt_index[:4]
    states, pooled = tiny_data.prompt_embeds[rows], tiny_data.pooled_embeds[rows]
    sigmas = torch.tensor([0.1, 0.4, 0.7, 1.0])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    img_ids, txt_ids = kontext_image_ids((4, 4), (4, 4)), text_ids(TEXT_LENGTH)
    with torch.no_grad():
        loss = mt.kontext_loss(transformer, x0, context, states, pooled, sigmas, noise, torch.full((4,), 2.5),
                               img_ids, txt_ids)
    handle.remove()
    hidden = recorded["hidden_states"]  # [4, 32, 64]
    expected_noisy = (1 - sigmas[:, None, None]) * x0 + sigmas[:, None, None] * noise
    assert torch.allclose(hidden[:, :16], expected_noisy) and torch.equal(hidden[:, 16:], context)
    assert torch.equal(recorded["timestep"], sigmas)  # the pipeline passes t / 1000 = sigma as well
    expected = ((recorded["output"][:, :16] - (noise - x0)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def _forward(transformer, tiny_data, count=3):
    rows = tiny_data.prompt_index[:count]
    hidden = torch.cat([tiny_data.targets[:count], tiny_data.sources[:count]], dim=1)  # [B, 32, 64]
    return transformer(hidden_states=hidden, encoder_hidden_states=tiny_data.prompt_embeds[rows],
                       pooled_projections=tiny_data.pooled_embeds[rows], timestep=torch.tensor([0.2, 0.6, 0.9]),
                       guidance=torch.full((count,), 2.5), img_ids=kontext_image_ids((4, 4), (4, 4)),
                       txt_ids=text_ids(TEXT_LENGTH), return_dict=False)[0]


@pytest.mark.parametrize("count", [1, 2])
def test_added_single_blocks_start_as_the_identity_and_learn(tiny_data, count):
    transformer = tiny_transformer(seed=3)
    deeper = mt.add_single_blocks(transformer, count)
    assert deeper.config.num_single_layers == transformer.config.num_single_layers + count
    assert len(deeper.single_transformer_blocks) == 1 + count
    with torch.no_grad():
        assert torch.allclose(_forward(deeper, tiny_data), _forward(transformer, tiny_data), atol=1e-6)
    _forward(deeper, tiny_data).square().mean().backward()
    new_block = deeper.single_transformer_blocks[-1]
    assert new_block.proj_out.weight.grad.abs().sum() > 0  # the zeroed projection gets a gradient: it will learn
    assert "single blocks" in mt.describe_transformer(deeper) and f"{1 + count} single" in mt.describe_transformer(deeper)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_adding_a_bad_number_of_blocks_says_what_to_do(count):
    with pytest.raises(ValueError, match="positive int"):
        mt.add_single_blocks(tiny_transformer(), count)


def test_latent_statistics_normalise_the_latents(pipe):
    vae = AutoencoderKL(**mt.vae_config(TINY_VAE))
    images = mt.to_model_images(tw.random_images(np.random.default_rng(0), 16, 32))
    shift, scale = mt.latent_statistics(vae, images)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    latents = mt.encode_latents(vae, images, batch_size=5)
    assert abs(latents.mean().item()) < 1e-4 and latents.std().item() == pytest.approx(1.0, abs=1e-4)


# --- short runs learn, reproducibly ------------------------------------------------------

def test_a_short_vae_run_lowers_the_loss():
    torch.manual_seed(0)
    vae = AutoencoderKL(**mt.vae_config(TINY_VAE))
    history = mt.train_vae(vae, device=torch.device("cpu"), size=32, batch_size=8, lr=3e-3, warmup=5, steps=40,
                           log=lambda _: None, show=False)
    assert len(history) == 20
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_a_short_transformer_run_lowers_the_loss_and_is_reproducible(tiny_data):
    runs = []
    for _ in range(2):
        transformer = tiny_transformer()
        ema, history = mt.train_transformer(transformer, tiny_data, device=torch.device("cpu"), seed=3, batch_size=8,
                                            lr=3e-3, warmup=5, steps=60, log=lambda _: None, show=False)
        runs.append((ema, history))
    (ema, history), (ema_again, _) = runs
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), ema_again.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), transformer.state_dict().values()))


def test_the_recipe_writes_a_pipeline_that_loads_and_evaluates(tmp_path):
    out = tmp_path / "mini"
    record = mt.main(["--out", str(out), "--vae-channels", "8,8,16,16", "--vae-steps", "3", "--vae-minutes", "0",
                      "--vae-batch", "4", "--heads", "2", "--double-blocks", "1", "--single-blocks", "1",
                      "--steps", "4", "--minutes", "0", "--batch", "4", "--train-pairs", "8", "--eval-pairs", "1",
                      "--eval-steps", "2", "--quiet"])
    pipe = load_pipeline(out, device="cpu")
    assert pipe.vae.config.shift_factor == record["vae"]["shift_factor"]
    assert pipe.vae.config.scaling_factor == record["vae"]["scaling_factor"] != miniature.VAE["scaling_factor"]
    assert pipe.transformer.config.num_attention_heads == 2 and pipe.transformer.config.num_layers == 1
    assert tuple(pipe.vae.config.block_out_channels) == (8, 8, 16, 16)
    saved = json.loads((out / "training_record.json").read_text())
    assert saved["max_sequence_length"] == TEXT_LENGTH
    assert [r["family"] for r in saved["evaluation"]["model"]] == list(tw.FAMILIES) + ["overall"]
    assert "held-out evaluation" in (out / "train_log.txt").read_text()
    with safe_open(out / "transformer" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.float16


TINY_RUN = ["--vae-channels", "8,8,16,16", "--vae-steps", "3", "--vae-minutes", "0", "--vae-batch", "4",
            "--heads", "2", "--double-blocks", "1", "--single-blocks", "1", "--minutes", "0", "--batch", "4",
            "--train-pairs", "8", "--eval-pairs", "0", "--quiet"]


def test_a_trained_transformer_continues_one_block_deeper(tmp_path):
    first = tmp_path / "first"
    mt.main(["--out", str(first), "--steps", "2", *TINY_RUN])
    with pytest.raises(SystemExit, match="--transformer"):
        mt.main(["--out", str(tmp_path / "x"), "--steps", "1", "--add-single-blocks", "1", *TINY_RUN])
    deeper = tmp_path / "deeper"
    record = mt.main(["--out", str(deeper), "--steps", "2", "--transformer", str(first / "transformer"),
                      "--vae", str(first / "vae"), "--add-single-blocks", "1", *TINY_RUN])
    pipe = load_pipeline(deeper, device="cpu")
    assert pipe.transformer.config.num_single_layers == 2 and pipe.transformer.config.num_layers == 1
    assert record["args"]["add_single_blocks"] == 1 and record["continued_from"]["args"]["steps"] == 2
    assert "1 double + 2 single blocks" in (deeper / "train_log.txt").read_text()


def test_a_phase_logs_twenty_times_by_steps():
    from kontext_teach.toy.mini_training import PhaseClock
    clock, logged = PhaseClock("test", 40, None, show=False), 0
    while clock.running():
        clock.tick()
        logged += clock.log_due()
    clock.close()
    assert (clock.step, logged) == (40, 20)


# --- which tokens the loss stresses ----------------------------------------------------------

def test_shape_tokens_cover_every_shape_of_source_and_target():
    pair = next(p for p in tw.make_pairs("train", 20, ("remove",)))
    grid = (4, 4)
    shaped = mt.shape_tokens(pair, grid).reshape(grid)
    for shape in pair.source_scene.shapes:  # also the removed one: its place must be painted over
        row, col = int(shape.y // 16), int(shape.x // 16)
        assert shaped[row, col], (shape, shaped)
    empty = tw.EditPair(0, "mirror", "", pair.source, pair.source, tw.Scene(64, ()), tw.Scene(64, ()))
    assert not mt.shape_tokens(empty, grid).any()


def test_token_weights_add_the_edit_and_shape_weights(tiny_data):
    batch = mt.Batch(index=torch.tensor([0, 3, 5]), prompt_rows=torch.tensor([0, 0, 0]), length=TEXT_LENGTH)
    assert mt.token_weights(tiny_data, batch, 0.0, 0.0) is None
    weights = mt.token_weights(tiny_data, batch, 4.0, 2.0)  # [3, Lt]
    changed, shaped = tiny_data.changed[batch.index].float(), tiny_data.shaped[batch.index].float()
    assert torch.equal(weights, 1 + 4 * changed + 2 * shaped)
    assert torch.equal(mt.token_weights(tiny_data, batch, 4.0), 1 + 4 * changed)
    assert 0 < shaped.mean() < 1 and tiny_data.shaped.shape == tiny_data.changed.shape


def test_family_weights_share_a_family_weight_among_its_pairs(tiny_data):
    uniform = mt.pair_probabilities(tiny_data, ())
    assert torch.allclose(uniform, torch.full((16,), 1 / 16))
    weighted = mt.pair_probabilities(tiny_data, (4, 1, 4, 1))
    per_family = torch.zeros(4).index_add_(0, tiny_data.family_index, weighted)
    assert torch.allclose(per_family, torch.tensor([0.4, 0.1, 0.4, 0.1]))
    with pytest.raises(ValueError, match="one non-negative weight per family"):
        mt.pair_probabilities(tiny_data, (1, 1))


def test_kind_weights_multiply_the_pairs_of_that_scene_kind(tiny_data):
    assert tiny_data.kind_group == tuple(tw.scene_kinds(p.source_scene) for p in tw.make_pairs("train", 16))
    group = max(set(tiny_data.kind_group), key=tiny_data.kind_group.count)
    chosen = torch.tensor([g == group for g in tiny_data.kind_group])
    assert 0 < chosen.sum() < 16
    plain = mt.pair_probabilities(tiny_data, (4, 1, 4, 1))
    tripled = mt.pair_probabilities(tiny_data, (4, 1, 4, 1), ((group, 3.0),))
    ratio = tripled / plain
    assert torch.allclose(ratio[chosen], 3 * ratio[~chosen][0].expand(int(chosen.sum())))
    assert torch.allclose(ratio[~chosen], ratio[~chosen][0].expand(int((~chosen).sum())))
    assert tripled.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("weights, message", [((("circle+hexagon", 2.0),), "KINDS=FACTOR"),
                                              ((("circle+square", -1.0),), "non-negative"),
                                              (tuple((g, 0.0) for g in tw.KIND_GROUPS), "no pair to draw")])
def test_bad_kind_weights_say_what_to_do(tiny_data, weights, message):
    with pytest.raises(ValueError, match=message):
        mt.pair_probabilities(tiny_data, (), weights)


def test_the_cli_reads_kind_weights():
    assert mt._kind_weights("circle+square=3, circle+square+triangle=1.5") == (
        ("circle+square", 3.0), ("circle+square+triangle", 1.5))
    assert mt._kind_weights("") == ()
    with pytest.raises(SystemExit, match="KINDS=FACTOR"):
        mt._kind_weights("circle+square")


def test_the_cli_picks_the_scene_style():
    assert mt.parse_args(["--out", "x"]).scene_style == "toy"
    assert tw.STYLES[mt.parse_args(["--out", "x", "--scene-style", "wide"]).scene_style] is tw.WIDE_STYLE
    with pytest.raises(SystemExit):
        mt.parse_args(["--out", "x", "--scene-style", "huge"])
