"""Train a Kontext LoRA from the command line.

    .venv/bin/python -m kontext_teach train --data my_pairs/ --output runs/my_lora
    .venv/bin/python -m kontext_teach train --model /models/FLUX.1-Kontext-dev --data my_pairs/ \\
        --output runs/real --rank 16 --gradient-checkpointing
    accelerate launch --num_processes 2 -m kontext_teach.training.train --data my_pairs/ --output runs/ddp
    torchrun --nproc_per_node 2 -m kontext_teach.training.train --data my_pairs/ --output runs/ddp   (also on CPUs)

Settings not given on the command line come from a preset that fits the model (--preset auto):
  miniature         a folder with a training_record.json (the embedded miniature, the default
                    model): notebook 09's recipe: rank 16, lr 1e-3, all linear layers, batch 8,
                    300 steps, logit-normal noise levels, guidance 1.0, the text length the
                    model was trained with (its training record names it)
  full-size         any other model (FLUX.1-Kontext-dev): rank 4, lr 1e-4, the layers of diffusers'
                    train_dreambooth_lora_flux_kontext.py, batch 1, 1000 steps, 512 T5 tokens,
                    uniform noise levels, guidance 1.0
  diffusers-script  the same with that script's own default guidance, 3.5
The settings used are printed before training starts and saved in OUTPUT/train_config.json.

The dataset folder holds images and a pairs.jsonl (one JSON object per line) or pairs.csv with
the fields source, target and instruction (see kontext_teach.training.edit_pairs). The LoRA is
written as OUTPUT/pytorch_lora_weights.safetensors, which a stock diffusers FluxKontextPipeline
loads with `pipe.load_lora_weights(OUTPUT)`. The output folder must be new or empty unless
--resume (continue the run in it: same settings, checked) or --overwrite (replace it).
Checkpoints are saved every --checkpoint-every steps and at the end; Ctrl-C stops after the
current step, saves a checkpoint and prints the command that resumes. With N processes each
step draws N x batch-size pairs and every process trains on its share: the result equals one
process with N times the batch (tests/test_lora_data_parallel.py).
"""

import argparse
import dataclasses
import shlex
import sys

from .recipes import DENSITIES, LORA_TARGETS, LOSS_WEIGHTINGS, LR_SCHEDULES, PRESETS, TrainConfig

PROG = "python -m kontext_teach train"
CHOICES = {
    "targets": sorted(LORA_TARGETS),
    "lr_schedule": list(LR_SCHEDULES),
    "density": list(DENSITIES),
    "loss_weighting": list(LOSS_WEIGHTINGS),
    "mixed_precision": ["auto", "bf16", "fp16", "no"],
    "fused_optimizer": ["auto", "yes", "no"],
}
HELP = {
    "steps": "optimizer steps in total",
    "batch_size": "pairs per step and per process (pairs of one size are batched together)",
    "learning_rate": "AdamW learning rate (> 0); the peak of the schedule",
    "lr_schedule": "constant, or cosine: linear warm-up, then a half cosine down to a tenth of the peak",
    "warmup_steps": "with --lr-schedule cosine: steps of linear warm-up",
    "weight_decay": "AdamW weight decay",
    "rank": "LoRA rank r (diffusers' script: 4; ai-toolkit: 16)",
    "alpha": "LoRA alpha; the update is scaled by alpha / rank",
    "targets": "which linear layers get a LoRA: attention (image stream), attention+text, diffusers-script "
               "(diffusers' default layers: both streams' attention, the feed-forwards, proj_mlp) or all-linear",
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
    "checkpoint_every": "save a resumable checkpoint every N steps (0 = only the one at the end)",
    "keep_checkpoints": "how many checkpoints to keep (at least 1)",
    "seed": "seed of every random draw (batches, noise levels, noise)",
    "max_sequence_length": "T5 tokens per prompt, at most 512; use the same at inference",
}
DEFAULT_TEXT = {"alpha": "alpha = rank", "max_sequence_length": "what the model was trained with: the miniature's "
                "training record says, 512 at full size"}
PRESET_FIELDS = sorted({name for settings in PRESETS.values() for name in settings})


def build_parser() -> argparse.ArgumentParser:
    intro, rest = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(prog=PROG, description=intro, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder with pairs.jsonl or pairs.csv and the images")
    parser.add_argument("--output", required=True, help="new or empty folder for the LoRA file, checkpoints and "
                        "train_config.json")
    parser.add_argument("--model", default=None, help="diffusers-layout Kontext folder or hub id "
                        "(default: $KONTEXT_TEACH_MODEL, else the embedded miniature)")
    parser.add_argument("--preset", default="auto", choices=["auto", *PRESETS],
                        help="settings for what the command line does not set (default: auto = miniature for a "
                        "folder with a training_record.json, else full-size)")
    parser.add_argument("--allow-download", action="store_true", help="allow downloading --model if it is a hub id")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its newest "
                        "checkpoint (the settings must match; says so if there is nothing to resume)")
    parser.add_argument("--overwrite", action="store_true", help="delete the previous run's LoRA, checkpoints and "
                        "train_config.json in --output first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for config_field in cli_fields():
        flag = "--" + config_field.name.replace("_", "-")
        if config_field.type is bool:
            parser.add_argument(flag, action="store_true", default=None, help=HELP[config_field.name])
            continue
        kind = int if config_field.type is int else str if config_field.type is str else float
        default = DEFAULT_TEXT.get(config_field.name, "from the preset" if config_field.name in PRESET_FIELDS
                                   else config_field.default)
        parser.add_argument(flag, type=kind, default=None, choices=CHOICES.get(config_field.name),
                            help=f"{HELP[config_field.name]} (default: {default})")
    return parser


def cli_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields offered on the command line (evaluation hooks are for Python callers)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name in HELP]


def given_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig settings given on the command line."""
    return {f.name: getattr(args, f.name) for f in cli_fields() if getattr(args, f.name) is not None}


def resolve_preset(preset: str, is_miniature: bool) -> str:
    if preset != "auto":
        return preset
    return "miniature" if is_miniature else "full-size"


def describe_settings(preset: str, reason: str, preset_values: dict, given: dict) -> str:
    """What the run is set to and where each setting came from, in two lines."""
    chosen = ", ".join(f"{k} {v}" for k, v in preset_values.items() if k not in given)
    line = f"preset {preset} ({reason}): {chosen}"
    if given:
        line += "\nfrom the command line: " + ", ".join(f"{k} {v}" for k, v in given.items())
    return line


def resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted run: the same arguments with --resume (never --overwrite)."""
    kept = [a for a in argv if a != "--overwrite"]
    if "--resume" not in kept:
        kept.append("--resume")
    return shlex.join([sys.executable, "-m", "kontext_teach", "train", *kept])


def loss_summary(result, bins: int = 5) -> list[str]:
    """The end-of-run summary: mean loss of the last tenth of the steps, and by noise level (bins with samples)."""
    from .lora_training import loss_by_sigma

    losses = [entry["loss"] for entry in result.history]
    tail = losses[-max(1, len(losses) // 10):]
    lines = [f"mean loss of the last {len(tail)} steps {sum(tail) / len(tail):.4f}"] if losses else []
    lines += [f"  sigma ~{centre:.1f}: mean loss {loss:.4f} over {count} samples"
              for centre, loss, count in loss_by_sigma(result.history, bins=bins) if count]
    return lines


def quiet_loading_bars() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was trained", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, argv: list[str]) -> int:
    # torch, diffusers and the trainer load only now: --help answers without them
    from ..lab.loading import ModelSourceError, load_pipeline, resolve_source, trained_text_length, training_record
    from .edit_pairs import PairDataError, load_pair_folder
    from .lora_training import check_output, is_main_launch_process, train_lora
    from .recipes import preset_settings

    notes: list[str] = []
    try:
        source = resolve_source(args.model)
        is_miniature = training_record(source) is not None
        text_length = trained_text_length(source)
        preset = resolve_preset(args.preset, is_miniature)
        reason = ("chosen" if args.preset != "auto" else
                  f"the model folder has a training record, trained with {text_length} T5 tokens" if is_miniature
                  else "a full-size model: no training record in its folder")
        given = given_settings(args)
        preset_values = preset_settings(preset, text_length)
        config = TrainConfig(**{**preset_values, **given})
        if is_main_launch_process():  # the others find the folder the first one prepared
            check_output(args.output, args.resume, args.overwrite, config)
        pairs = load_pair_folder(args.data, notes)
    except (ValueError, PairDataError, ModelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(describe_settings(preset, reason, preset_values, given))
    if config.max_sequence_length != text_length:
        print(f"note: the model was trained with {text_length} T5 tokens; you train with "
              f"{config.max_sequence_length} (pass max_sequence_length={config.max_sequence_length} at inference)")
    for note in notes[:5]:
        print(f"note: {note}")
    if len(notes) > 5:
        print(f"note: ... and {len(notes) - 5} more images converted the same way")
    if args.no_progress:
        quiet_loading_bars()
    try:
        pipe = load_pipeline(args.model, allow_download=args.allow_download)
        result = train_lora(pipe, pairs, config, args.output, resume=args.resume, overwrite=args.overwrite,
                            progress=not args.no_progress)
    except (ValueError, ModelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.interrupted:
        print(f"stopped at step {result.steps_done} of {config.steps}; checkpoint {result.checkpoint or '(none yet)'}"
              f"\ncontinue with:\n  {resume_command(argv)}")
        return 130
    if result.start_step == config.steps:
        print(f"the run had already finished its {config.steps} steps (ask for more --steps to continue it)")
    resumed = f" (resumed at step {result.start_step})" if result.start_step else ""
    print(f"trained {config.steps} steps on {len(pairs)} pairs{resumed}; " + "\n".join(loss_summary(result)))
    print(f"LoRA written to {result.lora_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
