"""What a LoRA run is set to: TrainConfig, the layer sets and the presets per model size.

No torch here, so that ``python -m kontext_teach train --help`` answers at once.

Presets (``PRESETS``) fill in every setting the command line is not given:

* ``miniature``: notebook 09's recipe for the embedded miniature: rank 16, lr 1e-3, all linear
  layers, batch 8, 300 steps, logit-normal noise levels, guidance 1.0, the text length the
  model was trained with.
* ``full-size``: FLUX.1-Kontext-dev: rank 4 and lr 1e-4 and the layers of diffusers'
  ``train_dreambooth_lora_flux_kontext.py``, batch 1, 512 T5 tokens, guidance 1.0 (the value
  in that script's README examples and ai-toolkit), uniform noise levels.
* ``diffusers-script``: that script's own defaults, guidance 3.5 included.
"""

import math
from dataclasses import dataclass

DOUBLE_BLOCK_ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
DOUBLE_BLOCK_CONTEXT_ATTENTION = ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
DOUBLE_BLOCK_FEED_FORWARD = ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"]
DOUBLE_BLOCK_MODULATION = ["norm1.linear", "norm1_context.linear"]
SINGLE_BLOCK_ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v"]
SINGLE_BLOCK_REST = ["proj_mlp", "proj_out", "norm.linear"]

# Which linear layers get a LoRA, by name inside the blocks: (double-block names, single-block names).
LORA_TARGETS = {
    # the image stream's attention projections only (what the benchmark's rows use)
    "attention": (DOUBLE_BLOCK_ATTENTION, SINGLE_BLOCK_ATTENTION),
    "attention+text": (DOUBLE_BLOCK_ATTENTION + DOUBLE_BLOCK_CONTEXT_ATTENTION, SINGLE_BLOCK_ATTENTION),
    # diffusers' train_dreambooth_lora_flux_kontext.py without --lora_layers: both streams' attention,
    # both feed-forwards and the single blocks' proj_mlp (not proj_out, not the AdaLN linears)
    "diffusers-script": (DOUBLE_BLOCK_ATTENTION + DOUBLE_BLOCK_CONTEXT_ATTENTION + DOUBLE_BLOCK_FEED_FORWARD,
                         SINGLE_BLOCK_ATTENTION + ["proj_mlp"]),
    "all-linear": (DOUBLE_BLOCK_ATTENTION + DOUBLE_BLOCK_CONTEXT_ATTENTION + DOUBLE_BLOCK_FEED_FORWARD
                   + DOUBLE_BLOCK_MODULATION, SINGLE_BLOCK_ATTENTION + SINGLE_BLOCK_REST),
}
# The names of timestep_sampling.DENSITIES and LOSS_WEIGHTINGS (a test checks that they agree).
DENSITIES = ("uniform", "logit_normal", "mode")
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")
MAX_SEQUENCE_LENGTH = 512  # FluxKontextPipeline refuses more at inference

# "from model" = the text length the model folder was trained with (lab.loading.trained_text_length).
FROM_MODEL = "from model"
PRESETS = {
    "miniature": dict(rank=16, learning_rate=1e-3, targets="all-linear", batch_size=8, steps=300,
                      density="logit_normal", loss_weighting="none", guidance=1.0, max_sequence_length=FROM_MODEL),
    "full-size": dict(rank=4, learning_rate=1e-4, targets="diffusers-script", batch_size=1, steps=1000,
                      density="uniform", loss_weighting="none", guidance=1.0, max_sequence_length=512),
    "diffusers-script": dict(rank=4, learning_rate=1e-4, targets="diffusers-script", batch_size=1, steps=1000,
                             density="uniform", loss_weighting="none", guidance=3.5, max_sequence_length=512),
}


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_at(config: "TrainConfig", step: int) -> float:
    """The learning rate of training step `step` (0-based): a function of the step alone, so a resumed run
    follows the same schedule. cosine: linear warm-up, then a half cosine from the peak to a tenth of it."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    done = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


@dataclass
class TrainConfig:
    """Every knob of a LoRA run.

    The defaults are a full-size starting point, not a copy of diffusers' script: rank 4 and
    lr 1e-4 as that script, but a LoRA on the image stream's attention only (``targets``),
    logit-normal noise levels and guidance 1.0. ``PRESETS["diffusers-script"]`` holds the
    script's own defaults (its layers, uniform noise levels, guidance 3.5); the command line
    picks a preset by model size (``python -m kontext_teach train --help``).
    """

    steps: int = 200
    batch_size: int = 1
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (linear warm-up, then cosine down to a tenth)
    warmup_steps: int = 0  # with lr_schedule="cosine": steps of linear warm-up
    weight_decay: float = 1e-4
    rank: int = 4
    alpha: float | None = None  # LoRA scale = alpha / rank; None -> alpha = rank
    targets: str = "attention"  # a key of LORA_TARGETS
    density: str = "logit_normal"  # timestep density: uniform | logit_normal | mode
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    loss_weighting: str = "none"  # none | sigma_sqrt | cosmap
    guidance: float = 1.0  # guidance embedding value during training
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    checkpoint_fraction: float = 1.0  # with gradient_checkpointing: share of blocks recomputed (rest keep activations)
    compile_blocks: bool = False  # torch.compile each repeated block (regional compilation; GPU)
    fused_optimizer: str = "auto"  # auto (fused AdamW on GPU) | yes | no
    mixed_precision: str = "auto"  # auto (bf16 on GPU, none on CPU) | bf16 | fp16 | no
    checkpoint_every: int = 100  # steps between checkpoints (one is always saved at the end); 0 = only at the end
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    seed: int = 0
    max_sequence_length: int = 512

    def __post_init__(self):
        problems = config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))


def config_problems(config: TrainConfig) -> list[str]:
    """Every reason why `config` cannot be trained, each saying what to use instead."""
    problems = []
    if config.targets not in LORA_TARGETS:
        problems.append(f"targets={config.targets!r}: use one of {sorted(LORA_TARGETS)}")
    if config.density not in DENSITIES:
        problems.append(f"density={config.density!r}: use one of {list(DENSITIES)}")
    if config.lr_schedule not in LR_SCHEDULES:
        problems.append(f"lr_schedule={config.lr_schedule!r}: use one of {list(LR_SCHEDULES)}")
    if config.warmup_steps < 0 or config.warmup_steps >= max(config.steps, 1):
        problems.append(f"warmup_steps must lie in [0, steps), got {config.warmup_steps} of {config.steps} steps")
    if config.loss_weighting not in LOSS_WEIGHTINGS:
        problems.append(f"loss_weighting={config.loss_weighting!r}: use one of {list(LOSS_WEIGHTINGS)}")
    for name in ("steps", "batch_size", "rank", "max_sequence_length", "keep_checkpoints"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("checkpoint_every", "eval_every", "max_grad_norm", "weight_decay"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be 0 or more, got {getattr(config, name)} (0 switches it off)")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        problems.append(f"learning_rate must be a positive number, got {config.learning_rate} "
                        "(try 1e-4 for the full-size model, 1e-3 for the miniature)")
    if config.alpha is not None and not (math.isfinite(config.alpha) and config.alpha > 0):
        problems.append(f"alpha must be positive, got {config.alpha} (leave it unset for alpha = rank)")
    if config.max_sequence_length > MAX_SEQUENCE_LENGTH:
        problems.append(f"max_sequence_length {config.max_sequence_length} is more than {MAX_SEQUENCE_LENGTH}, "
                        f"which FluxKontextPipeline refuses at inference; use {MAX_SEQUENCE_LENGTH} or less")
    if config.mixed_precision not in ("auto", "bf16", "fp16", "no"):
        problems.append(f"mixed_precision={config.mixed_precision!r}: use auto, bf16, fp16 or no")
    if config.fused_optimizer not in ("auto", "yes", "no"):
        problems.append(f"fused_optimizer={config.fused_optimizer!r}: use auto, yes or no")
    if not 0.0 <= config.checkpoint_fraction <= 1.0:
        problems.append(f"checkpoint_fraction must lie in [0, 1], got {config.checkpoint_fraction}")
    return problems


def preset_settings(preset: str, text_length: int) -> dict:
    """The TrainConfig settings of a preset, with the model's trained text length filled in."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: use one of {sorted(PRESETS)}")
    return {k: (text_length if v == FROM_MODEL else v) for k, v in PRESETS[preset].items()}

