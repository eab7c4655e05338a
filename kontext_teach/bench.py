"""Side-by-side speed of one Kontext LoRA training step: the reference set-up against ours.

    python -m kontext_teach.bench                      # full size on a GPU, 512² and 1024²
    python -m kontext_teach.bench --size small         # a scaled-down model (what CI runs on CPU)

Both variants train the same LoRA (r16 on to_q/to_k/to_v/to_out.0) of the same
FluxTransformer2DModel with random weights, built on the meta device and materialised on the
target device (no download), on a Kontext input: target + context image tokens + 512 text tokens.

  (a) reference: diffusers' gradient checkpointing on every block, bf16, SDPA, torch AdamW
      (the set-up of diffusers' train_dreambooth_lora_flux_kontext.py)
  (b) kontext_teach: the trainer's own step (lora_training.optimizer_step) with its speed
      options: regional torch.compile of the repeated blocks, fused AdamW, and gradient
      checkpointing on only a share of the blocks

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

from . import full_size
from .harness import silence_libraries
from .kontext_objective import EditBatch, kontext_prediction
from .lora_training import TrainConfig, make_optimizer, optimizer_step, prepare_transformer

SMALL_TRANSFORMER = dict(full_size.TRANSFORMER, num_layers=2, num_single_layers=4, attention_head_dim=32,
                         num_attention_heads=4, joint_attention_dim=256, pooled_projection_dim=64,
                         axes_dims_rope=(8, 12, 12))
TEXT_TOKENS = {"full": 512, "small": 32}


@dataclass(frozen=True)
class Variant:
    name: str
    config: TrainConfig


def variants(device: torch.device, checkpoint_fraction: float, compile_blocks: bool | None) -> list[Variant]:
    compile_blocks = device.type == "cuda" if compile_blocks is None else compile_blocks
    common = dict(rank=16, targets="attention", gradient_checkpointing=True, max_grad_norm=1.0, steps=1)
    return [
        Variant("(a) reference", TrainConfig(**common, fused_optimizer="no")),
        Variant("(b) kontext_teach", TrainConfig(**common, fused_optimizer="auto", compile_blocks=compile_blocks,
                                                 checkpoint_fraction=checkpoint_fraction)),
    ]


def build_transformer(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> FluxTransformer2DModel:
    """The transformer with random weights, built on meta and materialised on `device`."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:  # norm scales
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model.to(dtype)


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
    accelerator = Accelerator(mixed_precision="no", cpu=device.type == "cpu")
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


def run(size: str, sides: list[int], warmup: int, steps: int, checkpoint_fraction: float,
        compile_blocks: bool | None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model_config = full_size.TRANSFORMER if size == "full" else SMALL_TRANSFORMER
    text_tokens = TEXT_TOKENS[size]
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)  # the cuDNN attention backward failed on Flux (facts §10)
    rows = []
    for side in sides:
        flops = 3 * forward_flops(model_config, side, text_tokens)
        for variant in variants(device, checkpoint_fraction, compile_blocks):
            measured = time_variant(variant, model_config, side, text_tokens, device, dtype, warmup, steps)
            rows.append(dict(side=side, variant=variant.name, tokens=2 * (side // 16) ** 2 + text_tokens,
                             tflops=flops / measured["seconds"] / 1e12, **measured))
    return rows


def report(rows: list[dict], device_name: str) -> str:
    lines = [f"device: {device_name} | torch {torch.__version__}",
             f"{'side':>6} {'tokens':>7}  {'variant':<20}{'s/step':>9}{'peak GiB':>10}{'TFLOP/s':>10}{'loss':>9}"]
    for row in rows:
        lines.append(f"{row['side']:>6} {row['tokens']:>7}  {row['variant']:<20}{row['seconds']:>9.3f}"
                     f"{row['peak_gib']:>10.1f}{row['tflops']:>10.3f}{row['loss']:>9.4f}")
    for side in dict.fromkeys(row["side"] for row in rows):
        a, b = [row for row in rows if row["side"] == side]
        lines.append(f"{side}²: speed-up (a)/(b) = {a['seconds'] / b['seconds']:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.bench", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "small"], default=None,
                        help="full FLUX.1-Kontext-dev transformer (default on GPU) or a scaled-down one (default on CPU)")
    parser.add_argument("--sides", type=int, nargs="+", default=None,
                        help="image sides in pixels (default: 512 1024 full, 64 128 small)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--checkpoint-fraction", type=float, default=0.5,
                        help="(b): share of blocks with gradient checkpointing")
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
