"""Solutions of 09_lora_training."""

import pytest
import torch

from kontext_teach.anatomy import full_size
from kontext_teach.training.lora_training import TrainConfig, add_lora
from kontext_teach.solutions import s09_lora_training as s


@pytest.mark.parametrize("targets, rank", [("attention", 2), ("attention+text", 4), ("all-linear", 3)])
def test_lora_parameter_count_matches_peft(pipe, targets, rank):
    expected = s.lora_parameter_count(pipe.transformer, targets, rank)
    import kontext_teach as kt

    fresh = kt.load_pipeline(device="cpu").transformer
    trainable = add_lora(fresh, TrainConfig(targets=targets, rank=rank))
    assert expected == sum(p.numel() for p in trainable)


def test_full_size_rank_16_attention_lora():
    with torch.device("meta"):
        transformer = full_size.meta_components()["transformer"]
    # 19 double blocks x 4 (3072 -> 3072) + 38 single blocks x 3 (3072 -> 3072), r (in + out) each
    assert s.lora_parameter_count(transformer, "attention", 16) == (19 * 4 + 38 * 3) * 16 * (3072 + 3072)


def test_merged_weight_is_what_peft_applies():
    layer = torch.nn.Linear(6, 5)
    a, b = torch.randn(2, 6), torch.randn(5, 2)
    x = torch.randn(3, 6)
    lora_out = layer(x) + (4.0 / 2) * (x @ a.T @ b.T)
    merged = s.merged_weight(layer.weight, a, b, alpha=4.0, rank=2)
    torch.testing.assert_close(x @ merged.T + layer.bias, lora_out)


@pytest.mark.parametrize("fraction, new, expected_old", [(0.5, 4, 4), (0.25, 6, 2), (0.0, 3, 0)])
def test_replay_mix(fraction, new, expected_old):
    mixed = s.replay_mix([f"n{i}" for i in range(new)], [f"o{i}" for i in range(10)], fraction)
    assert sum(m.startswith("o") for m in mixed) == expected_old
    assert [m for m in mixed if m.startswith("n")] == [f"n{i}" for i in range(new)]
    with pytest.raises(ValueError, match="replay_fraction"):
        s.replay_mix(["n"], [], 1.0)


def test_training_without_replay_makes_the_old_edits_collapse(tmp_path):
    import kontext_teach as kt
    from kontext_teach.toy import edit_metric, toy_world
    from kontext_teach.training.lora_training import cache_pairs

    pipe = kt.load_pipeline(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    heldout_old = toy_world.make_pairs("heldout", 16, start=100)
    before = edit_metric.evaluate(pipe, heldout_old, steps=16).row("model").edit_accuracy
    new = cache_pairs(pipe, toy_world.make_pairs("train", 32, families=["everything_gold"]), edit_metric.TEXT_LENGTH)
    config = TrainConfig(steps=40, batch_size=8, learning_rate=3e-3, rank=16, targets="all-linear",
                         max_sequence_length=edit_metric.TEXT_LENGTH, checkpoint_every=0)
    after = s.old_edits_after_training(pipe, new, [], heldout_old, config, tmp_path / "no-replay", replay_fraction=0.0)
    assert before >= 0.6 and after <= before - 0.3, (before, after)


def test_full_prediction_holds_target_then_context_and_the_loss_keeps_the_target(pipe):
    import torch

    from kontext_teach.solutions.s09_lora_training import full_prediction
    from kontext_teach.toy import toy_world
    from kontext_teach.training.kontext_objective import kontext_prediction
    from kontext_teach.training.lora_training import cache_pairs

    cached = cache_pairs(pipe, toy_world.make_pairs("train", 2), 24)[0]
    noisy = torch.randn(cached.target_latents.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.7])
    with torch.no_grad():
        full = full_prediction(pipe.transformer, cached, noisy, sigma)
        kept = kontext_prediction(pipe.transformer, cached, noisy, sigma, guidance=1.0)
    target = (cached.target_latents.shape[-2] // 2) * (cached.target_latents.shape[-1] // 2)
    context = (cached.context_latents.shape[-2] // 2) * (cached.context_latents.shape[-1] // 2)
    assert full.shape[1] == target + context and kept.shape[1] == target
    torch.testing.assert_close(kept, full[:, :target])
