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
