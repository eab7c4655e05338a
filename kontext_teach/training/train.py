"""Train a Kontext LoRA from the command line.

    python -m kontext_teach.training.train --data my_pairs/ --output runs/my_lora
    python -m kontext_teach.training.train --model /models/FLUX.1-Kontext-dev --data my_pairs/ \\
        --output runs/real --rank 16 --gradient-checkpointing --steps 1000
    accelerate launch --num_processes 2 -m kontext_teach.training.train --data my_pairs/ --output runs/ddp
    torchrun --nproc_per_node 2 -m kontext_teach.training.train --data my_pairs/ --output runs/ddp   (also on CPUs)

The dataset folder holds images and a pairs.jsonl (or pairs.csv) with the fields source,
target and instruction (see kontext_teach.training.edit_pairs). The LoRA is written as
OUTPUT/pytorch_lora_weights.safetensors, which a stock diffusers FluxKontextPipeline loads
with `pipe.load_lora_weights(OUTPUT)`. Interrupted? Run the same command with --resume.
With N processes each step draws N x batch-size pairs and every process trains on its share:
the result equals one process with N times the batch (tests/test_lora_data_parallel.py).
"""

import argparse
import dataclasses
import sys

from .edit_pairs import PairDataError, load_pair_folder
from ..lab.loading import ModelSourceError, load_pipeline
from .lora_training import LORA_TARGETS, TrainConfig, loss_by_sigma, train_lora
from .timestep_sampling import DENSITIES, LOSS_WEIGHTINGS

CHOICES = {
    "targets": sorted(LORA_TARGETS),
    "density": list(DENSITIES),
    "loss_weighting": list(LOSS_WEIGHTINGS),
    "mixed_precision": ["auto", "bf16", "fp16", "no"],
    "fused_optimizer": ["auto", "yes", "no"],
}
HELP = {
    "steps": "optimizer steps in total",
    "batch_size": "pairs per step and per process (pairs of one size are batched together)",
    "learning_rate": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "rank": "LoRA rank r (diffusers' script: 4; ai-toolkit: 16)",
    "alpha": "LoRA alpha; the update is scaled by alpha / rank (default: alpha = rank)",
    "targets": f"which linear layers get a LoRA: {', '.join(LORA_TARGETS)}",
    "density": "how training noise levels are drawn: uniform, logit_normal or mode",
    "logit_mean": "mean of the logit-normal density",
    "logit_std": "standard deviation of the logit-normal density",
    "mode_scale": "scale of the 'mode' density (SD3 paper)",
    "loss_weighting": "per-sample loss weights: none, sigma_sqrt or cosmap",
    "guidance": "guidance-embedding value during training (1.0 in ai-toolkit and diffusers' examples)",
    "max_grad_norm": "clip the gradient norm to this value (0 = no clipping)",
    "gradient_checkpointing": "recompute activations in the backward pass: much less memory, ~30%% slower",
    "checkpoint_fraction": "with --gradient-checkpointing, the share of blocks recomputed (lower = faster, more memory)",
    "compile_blocks": "torch.compile each repeated transformer block (regional compilation; worth it on a GPU)",
    "fused_optimizer": "fused AdamW: auto (on GPU), yes or no",
    "mixed_precision": "auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or no",
    "checkpoint_every": "save a resumable checkpoint every N steps (0 = only at the end)",
    "keep_checkpoints": "how many checkpoints to keep",
    "seed": "seed of every random draw (batches, noise levels, noise)",
    "max_sequence_length": "T5 tokens per prompt (the pipeline's default is 512; use the same at inference)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.training.train", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder with pairs.jsonl or pairs.csv and the images")
    parser.add_argument("--output", required=True, help="folder for the LoRA file, checkpoints and train_config.json")
    parser.add_argument("--model", default=None, help="diffusers-layout Kontext folder or hub id "
                        "(default: $KONTEXT_TEACH_MODEL, else the embedded miniature)")
    parser.add_argument("--allow-download", action="store_true", help="allow downloading --model if it is a hub id")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for config_field in cli_fields():
        flag = "--" + config_field.name.replace("_", "-")
        if config_field.type is bool:
            parser.add_argument(flag, action="store_true", help=HELP[config_field.name])
        else:
            kind = int if config_field.type is int else str if config_field.type is str else float
            parser.add_argument(flag, type=kind, default=config_field.default, choices=CHOICES.get(config_field.name),
                                help=f"{HELP[config_field.name]} (default: {config_field.default})")
    return parser


def cli_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields offered on the command line (evaluation hooks are for Python callers)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name in HELP]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = {f.name: getattr(args, f.name) for f in cli_fields()}
    try:
        config = TrainConfig(**settings)
        pairs = load_pair_folder(args.data)
        pipe = load_pipeline(args.model, allow_download=args.allow_download)
    except (ValueError, PairDataError, ModelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train_lora(pipe, pairs, config, args.output, resume=args.resume, progress=not args.no_progress)
    losses = [entry["loss"] for entry in result.history]
    tail = losses[-max(1, len(losses) // 10):]
    print(f"trained {config.steps} steps on {len(pairs)} pairs; mean loss of the last {len(tail)} steps "
          f"{sum(tail) / len(tail):.4f}")
    for centre, loss, count in loss_by_sigma(result.history, bins=5):
        print(f"  sigma ~{centre:.1f}: mean loss {loss:.4f} over {count} samples")
    print(f"LoRA written to {result.lora_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
