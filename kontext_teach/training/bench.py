"""Side-by-side speed of one Kontext LoRA training step: the reference set-up against ours.

    python -m kontext_teach.training.bench                      # full size on a GPU, 512² and 1024²
    python -m kontext_teach.training.bench --size small         # a scaled-down model (what CI runs on CPU)

Both variants train the same LoRA (r16 on to_q/to_k/to_v/to_out.0) of the same
FluxTransformer2DModel with random weights, built on the meta device and materialised on the
target device (no download), on a Kontext input: target + context image tokens + 512 text tokens.

  (a) reference: diffusers' gradient checkpointing on every block, bf16, SDPA, torch AdamW
      (the set-up of diffusers' train_dreambooth_lora_flux_kontext.py)
  (b) kontext_teach: the trainer's own step (lora_training.optimizer_step) with its speed
      options: regional torch.compile of the repeated blocks, fused AdamW, and gradient
      checkpointing on every block or on only a share of them (one (b) per --checkpoint-fraction)

Printed per variant and resolution: seconds per step (median of the timed steps), peak memory,
model TFLOP/s (forward FLOPs counted by torch's FlopCounterMode on the meta device, times 3 for
forward + backward), and the ratio (a)/(b) measured in the same run.
"""

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers import FluxTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

from ..anatomy import full_size
from ..lab.harness import avoid_failing_attention_backends, silence_libraries
from .kontext_objective import EditBatch, kontext_prediction
from .lora_training import TrainConfig, make_optimizer, mixed_precision, optimizer_step, prepare_transformer

SMALL_TRANSFORMER = dict(full_size.TRANSFORMER, num_layers=2, num_single_layers=4, attention_head_dim=32,
                         num_attention_heads=4, joint_attention_dim=256, pooled_projection_dim=64,
                         axes_dims_rope=(8, 12, 12))
TEXT_TOKENS = {"full": 512, "small": 32}


@dataclass(frozen=True)
class Variant:
    name: str
    config: TrainConfig


def variants(device: torch.device, checkpoint_fraction: float | list[float],
             compile_blocks: bool | None) -> list[Variant]:
    """(a) the reference, then one (b) per checkpoint fraction (share of blocks with checkpointing)."""
    compile_blocks = device.type == "cuda" if compile_blocks is None else compile_blocks
    fractions = [checkpoint_fraction] if isinstance(checkpoint_fraction, (int, float)) else list(checkpoint_fraction)
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"checkpoint fractions are shares of the blocks, in [0, 1]; got {checkpoint_fraction}")
    common = dict(rank=16, targets="attention", gradient_checkpointing=True, max_grad_norm=1.0, steps=1)
    fast = [Variant(f"(b) kontext_teach ckpt {fraction:.0%}",
                    TrainConfig(**common, fused_optimizer="auto", compile_blocks=compile_blocks,
                                checkpoint_fraction=fraction)) for fraction in fractions]
    return [Variant("(a) reference", TrainConfig(**common, fused_optimizer="no")), *fast]


def build_transformer(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> FluxTransformer2DModel:
    """The transformer with random weights, built on meta and materialised on `device`."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    model = model.to(dtype).to_empty(device=device)  # allocated once, in `dtype` (22 GiB at full size in bf16)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:  # norm scales
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model


def kontext_batch(model_config: dict, side: int, text_tokens: int, device, dtype, seed: int = 0):
    """Random Kontext inputs at side x side pixels: (batch, sigmas, noise)."""
    g = torch.Generator().manual_seed(seed)
    latent = side // 8
    make = lambda *shape: torch.randn(*shape, generator=g).to(device, dtype)  # noqa: E731
    batch = EditBatch(make(1, 16, latent, latent), make(1, 16, latent, latent),
                      make(1, text_tokens, model_config["joint_attention_dim"]),
                      make(1, model_config["pooled_projection_dim"]))
    return batch, torch.rand(1, generator=g).to(device), make(1, 16, latent, latent)


def forward_flops(model_config: dict, side: int, text_tokens: int) -> int:
    """FLOPs of one forward pass, counted by FlopCounterMode on the meta device (no memory)."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**model_config)
    batch, sigmas, noise = kontext_batch(model_config, side, text_tokens, "meta", torch.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        kontext_prediction(model, batch, noise, sigmas, guidance=1.0)
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_variant(variant: Variant, model_config: dict, side: int, text_tokens: int, device: torch.device,
                 dtype: torch.dtype, warmup: int, steps: int) -> dict:
    """Seconds per step (median), peak memory (GiB, GPU only) and the final loss of one variant."""
    model = build_transformer(model_config, device, dtype)
    parameters = prepare_transformer(model, variant.config)
    optimizer = make_optimizer(parameters, variant.config, device)
    # bf16 autocast on a GPU, as the trainer and diffusers' script (--mixed_precision bf16); fp32 on CPU
    accelerator = Accelerator(mixed_precision=mixed_precision(variant.config), cpu=device.type == "cpu")
    batch, sigmas, noise = kontext_batch(model_config, side, text_tokens, device, dtype)
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        losses = optimizer_step(model, parameters, optimizer, batch, sigmas, noise, variant.config, accelerator)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, optimizer
    return dict(seconds=statistics.median(times), peak_gib=peak, loss=losses.mean().item())


def run(size: str, sides: list[int], warmup: int, steps: int, checkpoint_fraction: float | list[float],
        compile_blocks: bool | None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model_config = full_size.TRANSFORMER if size == "full" else SMALL_TRANSFORMER
    text_tokens = TEXT_TOKENS[size]
    avoid_failing_attention_backends(device)
    rows = []
    for side in sides:
        flops = 3 * forward_flops(model_config, side, text_tokens)
        for variant in variants(device, checkpoint_fraction, compile_blocks):
            measured = time_variant(variant, model_config, side, text_tokens, device, dtype, warmup, steps)
            rows.append(dict(side=side, variant=variant.name, tokens=2 * (side // 16) ** 2 + text_tokens,
                             tflops=flops / measured["seconds"] / 1e12, **measured))
            print(f"measured {side}² {variant.name}: {measured['seconds']:.3f} s/step, "
                  f"{measured['peak_gib']:.1f} GiB", flush=True)  # a run cut short still shows what it measured
    return rows


def report(rows: list[dict], device_name: str) -> str:
    lines = [f"device: {device_name} | torch {torch.__version__}",
             f"{'side':>6} {'tokens':>7}  {'variant':<30}{'s/step':>9}{'peak GiB':>10}{'TFLOP/s':>10}{'loss':>9}"]
    for row in rows:
        lines.append(f"{row['side']:>6} {row['tokens']:>7}  {row['variant']:<30}{row['seconds']:>9.3f}"
                     f"{row['peak_gib']:>10.1f}{row['tflops']:>10.3f}{row['loss']:>9.4f}")
    for side in dict.fromkeys(row["side"] for row in rows):
        reference, *fast = [row for row in rows if row["side"] == side]
        for row in fast:
            lines.append(f"{side}²: speed-up (a)/{row['variant']} = {reference['seconds'] / row['seconds']:.2f}x, "
                         f"peak memory {row['peak_gib'] - reference['peak_gib']:+.1f} GiB")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.training.bench", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "small"], default=None,
                        help="full FLUX.1-Kontext-dev transformer (default on GPU) or a scaled-down one (default on CPU)")
    parser.add_argument("--sides", type=int, nargs="+", default=None,
                        help="image sides in pixels (default: 512 1024 full, 64 128 small)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--checkpoint-fraction", type=float, nargs="+", default=[1.0, 0.5],
                        help="(b): share of blocks with gradient checkpointing; several give one (b) each")
    parser.add_argument("--compile", choices=["auto", "yes", "no"], default="auto",
                        help="(b): regional torch.compile (auto: on GPU only)")
    args = parser.parse_args(argv)
    silence_libraries()
    size = args.size or ("full" if torch.cuda.is_available() else "small")
    sides = args.sides or ([512, 1024] if size == "full" else [64, 128])
    compile_blocks = {"auto": None, "yes": True, "no": False}[args.compile]
    rows = run(size, sides, args.warmup, args.steps, args.checkpoint_fraction, compile_blocks)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(report(rows, name))


if __name__ == "__main__":
    main()
