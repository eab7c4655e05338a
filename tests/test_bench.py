"""The training-speed benchmark runs on CPU, and its fast variant trains the same LoRA."""

import pytest
import torch

from kontext_teach.training import bench
from kontext_teach.training.lora_training import make_optimizer, optimizer_step, prepare_transformer
from accelerate import Accelerator


def lora_weights_after(variant, steps=3):
    model = bench.build_transformer(bench.SMALL_TRANSFORMER, torch.device("cpu"), torch.float32)
    parameters = prepare_transformer(model, variant.config)
    optimizer = make_optimizer(parameters, variant.config, torch.device("cpu"))
    batch, sigmas, noise = bench.kontext_batch(bench.SMALL_TRANSFORMER, 32, 8, "cpu", torch.float32)
    model.train()
    losses = [optimizer_step(model, parameters, optimizer, batch, sigmas, noise, variant.config,
                             Accelerator(cpu=True)).item() for _ in range(steps)]
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n}, losses


def test_fast_variant_trains_the_same_lora_in_fp32():
    reference, fast = bench.variants(torch.device("cpu"), checkpoint_fraction=0.5, compile_blocks=False)
    fast = bench.Variant(fast.name, bench.dataclasses.replace(fast.config, fused_optimizer="yes"))
    (a, losses_a), (b, losses_b) = lora_weights_after(reference), lora_weights_after(fast)
    assert a.keys() == b.keys() and len(a) > 0
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert max(abs(x - y) for x, y in zip(losses_a, losses_b)) < 1e-6
    assert losses_a[-1] != losses_a[0]  # the steps did train


def test_flops_count_grows_with_tokens():
    small, large = (bench.forward_flops(bench.SMALL_TRANSFORMER, side, 8) for side in (32, 64))
    assert 0 < small < large


def test_full_size_forward_flops_at_1024():
    flops = bench.forward_flops(bench.full_size.TRANSFORMER, 1024, 512)
    # By hand, per token-applied weight: 19 double blocks (113 M weights per stream; 8192 image and
    # 512 text tokens) 3.7e13, 38 single blocks (113 M weights, 8704 tokens) 7.5e13, attention
    # (4 L^2 d per block) 5.3e13: 1.65e14. The naive 2 x 11.9e9 x 8704 (2.07e14) also counts the
    # AdaLN weights, which act on one vector, not on the tokens.
    assert 1.6e14 < flops < 1.7e14


def test_benchmark_script_prints_side_by_side_ratios(capsys):
    bench.main(["--size", "small", "--sides", "32", "--warmup", "0", "--steps", "1", "--compile", "no"])
    out = capsys.readouterr().out
    assert "(a) reference" in out and "(b) kontext_teach ckpt 50%" in out and "speed-up (a)/(b)" in out


def test_one_fast_variant_per_checkpoint_fraction(capsys):
    names = [v.name for v in bench.variants(torch.device("cpu"), [1.0, 0.5], compile_blocks=False)]
    assert names == ["(a) reference", "(b) kontext_teach ckpt 100%", "(b) kontext_teach ckpt 50%"]
    bench.main(["--size", "small", "--sides", "32", "--warmup", "0", "--steps", "1", "--compile", "no",
                "--checkpoint-fraction", "1", "0"])
    out = capsys.readouterr().out
    assert out.count("speed-up (a)/(b) kontext_teach ckpt") == 2


def test_checkpoint_fraction_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="shares of the blocks"):
        bench.variants(torch.device("cpu"), [1.5], compile_blocks=False)
