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

Printed per variant and resolution: seconds per step (median of the timed steps, with their
min and max), peak memory (GPU; "n/a" on CPU), model TFLOP/s (forward FLOPs counted by torch's
FlopCounterMode on the meta device, times 3 for forward + backward), and the ratio (a)/(b)
measured in the same run.

The results are kept as data: a GPU run writes benchmarks/results/<date>-<card>.json (card,
driver, versions, command line, every timed step); a CPU run writes only where --results says.
README's Performance table is rendered from the newest file (--render-readme), and
results_summary(latest_results()) gives the same figures as text (notebook 09).
"""

import argparse
import dataclasses
import datetime
import json
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
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
REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "README.md"
TABLE_START, TABLE_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


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
    """Seconds of every timed step (median, min, max), peak memory (GiB on a GPU, None on CPU:
    torch does not track CPU allocations) and the final loss of one variant."""
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
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    del model, optimizer
    return dict(seconds=statistics.median(times), seconds_min=min(times), seconds_max=max(times),
                step_seconds=times, peak_gib=peak, loss=losses.mean().item())


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
        reference_seconds = None
        for variant in variants(device, checkpoint_fraction, compile_blocks):
            measured = time_variant(variant, model_config, side, text_tokens, device, dtype, warmup, steps)
            reference_seconds = reference_seconds or measured["seconds"]  # (a) comes first
            rows.append(dict(side=side, variant=variant.name, tokens=2 * (side // 16) ** 2 + text_tokens,
                             config=variant_settings(variant.config), step_tflop=flops / 1e12,
                             tflops=flops / measured["seconds"] / 1e12,
                             ratio_to_a=reference_seconds / measured["seconds"], **measured))
            print(f"measured {side}² {variant.name}: {measured['seconds']:.3f} s/step, "
                  f"{gib(measured['peak_gib'])}", flush=True)  # a run cut short still shows what it measured
    return rows


def variant_settings(config: TrainConfig) -> dict:
    """The speed options of a variant, as kept in the results file."""
    return {name: getattr(config, name) for name in
            ("gradient_checkpointing", "checkpoint_fraction", "compile_blocks", "fused_optimizer")}


def gib(value: float | None, signed: bool = False) -> str:
    """Memory for printing: "n/a" where it was not measured (CPU), never NaN."""
    if value is None:
        return "n/a"
    return f"{value:+.1f} GiB" if signed else f"{value:.1f} GiB"


def report(rows: list[dict], device_name: str) -> str:
    lines = [f"device: {device_name} | torch {torch.__version__}",
             f"{'side':>6} {'tokens':>7}  {'variant':<30}{'s/step':>9}{'peak GiB':>10}{'TFLOP/s':>10}{'loss':>9}"]
    for row in rows:
        peak = "n/a" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        lines.append(f"{row['side']:>6} {row['tokens']:>7}  {row['variant']:<30}{row['seconds']:>9.3f}"
                     f"{peak:>10}{row['tflops']:>10.3f}{row['loss']:>9.4f}"
                     f"   (steps {row['seconds_min']:.3f}-{row['seconds_max']:.3f} s)")
    for side in dict.fromkeys(row["side"] for row in rows):
        reference, *fast = [row for row in rows if row["side"] == side]
        for row in fast:
            extra = (None if row["peak_gib"] is None or reference["peak_gib"] is None
                     else row["peak_gib"] - reference["peak_gib"])
            lines.append(f"{side}²: speed-up (a)/{row['variant']} = {reference['seconds'] / row['seconds']:.2f}x, "
                         f"peak memory {gib(extra, signed=True)}")
    return "\n".join(lines)


# ---- results kept as data ------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    """Card, driver and library versions of this run."""
    import diffusers
    import transformers
    driver = None
    if device.type == "cuda":
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip() or None
        except (OSError, subprocess.SubprocessError):
            driver = None
    return dict(card=torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.machine()})",
                driver=driver, cuda=torch.version.cuda if device.type == "cuda" else None,
                torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__,
                python=platform.python_version())


def results_document(rows: list[dict], env: dict, settings: dict, command: str, date: str | None = None) -> dict:
    """Everything one run measured, as written to the results file."""
    return dict(schema=1, date=date or datetime.date.today().isoformat(), source="measured", **env,
                commands=[command], settings=settings, rows=rows)


def results_path(document: dict, folder=None) -> pathlib.Path:
    """benchmarks/results/<date>-<card>.json, with -2, -3 ... for a second run on the same day."""
    folder = RESULTS_DIR if folder is None else folder
    card = re.sub(r"[^a-z0-9]+", "-", document["card"].lower()).strip("-")
    path = pathlib.Path(folder) / f"{document['date']}-{card}.json"
    number = 2
    while path.exists():
        path = path.with_name(f"{document['date']}-{card}-{number}.json")
        number += 1
    return path


def write_results(document: dict, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def latest_results(folder=None) -> dict:
    """The newest results file of `folder` (default benchmarks/results; by the date it records, then
    by name), as a dict with its file name under "file"."""
    folder = RESULTS_DIR if folder is None else folder
    files = sorted(pathlib.Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no benchmark results in {folder}: run `python -m kontext_teach bench` on a GPU "
                                f"(scripts/gpu_bench.sh) or pass the folder that holds them")
    documents = [(json.loads(f.read_text()), f.name) for f in files]
    document, name = max(documents, key=lambda pair: (pair[0]["date"], pair[1]))
    return dict(document, file=name)


def column_name(row: dict) -> str:
    """A table column per variant: (a), or (b) by its share of checkpointed blocks."""
    if row["variant"].startswith("(a)"):
        return "(a) reference"
    fraction = row["config"]["checkpoint_fraction"]
    share = ("every block" if fraction == 1 else "no block" if fraction == 0
             else "half the blocks" if fraction == 0.5 else f"{fraction:.0%} of the blocks")
    extra = "".join(f", {key.replace('_', ' ')} {value}" for key, value in row["config"].items()
                    if key not in ("gradient_checkpointing", "checkpoint_fraction", "compile_blocks", "fused_optimizer"))
    return f"(b) checkpointing on {share}{extra}"


def _seconds(row: dict, unit: str) -> str:
    spread = ("" if row.get("seconds_min") is None
              else f" ({row['seconds_min']:.3f}-{row['seconds_max']:.3f})")
    return f"{row['seconds']:.3f} {unit}{spread}"


def _cell(row: dict) -> str:
    if row.get("error"):
        return f"failed: {row['error']}"
    parts = [_seconds(row, "s/step") if row["variant"].startswith("(a)")
             else f"{_seconds(row, 's')} (**{row['ratio_to_a']:.2f}×**)"]
    if row.get("peak_gib") is not None:
        parts.append(f"{row['peak_gib']:.1f} GiB")
    parts.append(f"{row['tflops']:.0f} TFLOP/s")
    return ", ".join(parts)


def render_table(document: dict) -> str:
    """README's Performance block (markdown): where and how it was measured, then one row per size."""
    rows = document["rows"]
    columns = list(dict.fromkeys(column_name(row) for row in rows))
    sides = sorted(dict.fromkeys(row["side"] for row in rows), reverse=True)
    settings = document["settings"]
    source = ("" if document["source"] == "measured" else
              " Transcribed from the run's printed output (what it kept: `source` in the file)")
    versions = ", ".join(f"{name} {document[name]}" for name in ("torch", "diffusers", "transformers")
                         if document.get(name))
    spread = any(row.get("seconds_min") is not None for row in rows)
    lines = [f"Measured on one {document['card']}"
             + (f" (driver {document['driver']})" if document.get("driver") else "")
             + f", {document['date']}, {versions}; {settings['dtype']}, {settings['lora']}, batch {settings['batch']}, "
             f"{settings['text_tokens']} text tokens; median of {settings['steps']} timed steps"
             + (" (min-max in brackets)" if spread else "")
             + f" after {settings['warmup']} warm-up steps; "
             + " and ".join(f"`{command}`" for command in document["commands"]) + "."
             + source + f": `benchmarks/results/{document.get('file', '?')}`.", "",
             "| size | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for side in sides:
        cells = {column_name(row): _cell(row) for row in rows if row["side"] == side}
        lines.append(f"| {side}² | " + " | ".join(cells.get(column, "") for column in columns) + " |")
    work = ", ".join(f"{next(r['step_tflop'] for r in rows if r['side'] == side) / 3:.1f} TFLOP at {side}² "
                     f"({next(r['tokens'] for r in rows if r['side'] == side)} tokens)" for side in sides
                     if all(r.get("step_tflop") for r in rows if r["side"] == side))
    if work:
        lines += ["", f"Useful work per step: 3 × the forward pass, which is {work}."]
    return "\n".join(lines)


def results_summary(document: dict) -> str:
    """The same figures as plain text, one line per size and variant (for notebook 09)."""
    lines = [f"{document['card']}, {document['date']}, torch {document['torch']}, diffusers {document['diffusers']}"
             f" ({document.get('file', 'results')})"]
    for row in sorted(document["rows"], key=lambda r: -r["side"]):
        if row.get("error"):
            lines.append(f"{row['side']}² {column_name(row)}: failed ({row['error']})")
            continue
        peak = "" if row.get("peak_gib") is None else f", {row['peak_gib']:.1f} GiB"
        lines.append(f"{row['side']}² {column_name(row)}: {row['seconds']:.3f} s/step{peak}, "
                     f"{row['tflops']:.0f} TFLOP/s, {row['ratio_to_a']:.2f}x (a)")
    return "\n".join(lines)


def render_readme(readme_text: str, document: dict) -> str:
    """README with the block between the bench-table markers replaced by render_table(document)."""
    start, end = readme_text.find(TABLE_START), readme_text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {TABLE_START} ... {TABLE_END} block to fill")
    return readme_text[:start + len(TABLE_START)] + "\n" + render_table(document) + "\n" + readme_text[end:]


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
    parser.add_argument("--results", type=pathlib.Path, default=None,
                        help="write the results file here (default on a GPU: benchmarks/results/<date>-<card>.json; "
                             "on CPU only when given)")
    parser.add_argument("--render-readme", action="store_true",
                        help="measure nothing: rewrite README's Performance table from the newest results file")
    parser.add_argument("--adopt", type=pathlib.Path, default=None, metavar="FILE",
                        help="measure nothing: copy a results file (e.g. from a GPU machine's $OUT) into "
                             "benchmarks/results/ under its date and card, then render README's table")
    args = parser.parse_args(argv)
    if args.adopt:
        document = json.loads(args.adopt.read_text())
        written = write_results(document, results_path(document))
        print(f"adopted {args.adopt} as {written}")
        args.render_readme = True
    if args.render_readme:
        document = latest_results()
        README.write_text(render_readme(README.read_text(), document))
        print(f"README.md: Performance table rendered from benchmarks/results/{document['file']}")
        return
    silence_libraries()
    size = args.size or ("full" if torch.cuda.is_available() else "small")
    sides = args.sides or ([512, 1024] if size == "full" else [64, 128])
    compile_blocks = {"auto": None, "yes": True, "no": False}[args.compile]
    rows = run(size, sides, args.warmup, args.steps, args.checkpoint_fraction, compile_blocks)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment(device)
    print(report(rows, env["card"]))
    settings = dict(size=size, dtype="bfloat16" if device.type == "cuda" else "float32",
                    lora="r16 LoRA on to_q/to_k/to_v/to_out.0", batch=1, text_tokens=TEXT_TOKENS[size],
                    warmup=args.warmup, steps=args.steps)
    command = shlex.join(["python", "-m", "kontext_teach", "bench", *(sys.argv[1:] if argv is None else argv)])
    path = args.results or (results_path(dict(env, date=datetime.date.today().isoformat()))
                            if device.type == "cuda" else None)
    if path is not None:
        written = write_results(results_document(rows, env, settings, command), path)
        print(f"results written to {written}")


if __name__ == "__main__":
    main()
