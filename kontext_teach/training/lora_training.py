"""A Kontext LoRA trainer, written to be read.

    pairs  -> cache_pairs()      latents (VAE posterior mode, shifted and scaled) and text
                                 embeddings, computed once: the encoders can leave the GPU
    config -> add_lora()         peft LoRA on named modules of the transformer
           -> train_lora()       the Kontext objective (kontext_objective.kontext_loss) with
                                 AdamW, bf16 autocast on GPU, gradient clipping, checkpoints
                                 and exact resume, built on accelerate
           -> save_lora_weights  a file that a stock FluxKontextPipeline loads with
                                 load_lora_weights()

Every random draw of step s comes from a generator seeded with (seed, s): a run resumed
from a checkpoint takes the same steps as one that was never interrupted.
"""

import dataclasses
import json
import math
import pathlib
import re
import shutil
from dataclasses import dataclass, field

import torch
import torch.utils.checkpoint
from accelerate import Accelerator
from diffusers import FluxKontextPipeline
from diffusers.training_utils import cast_training_params
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .edit_pairs import EditPair, check_pair
from ..lab.harness import avoid_failing_attention_backends
from .kontext_objective import EditBatch, kontext_loss
from .timestep_sampling import loss_weighting, sample_u, sigmas_from_u

DOUBLE_BLOCK_ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
DOUBLE_BLOCK_CONTEXT_ATTENTION = ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
DOUBLE_BLOCK_REST = ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
                     "norm1.linear", "norm1_context.linear"]
SINGLE_BLOCK_ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v"]
SINGLE_BLOCK_REST = ["proj_mlp", "proj_out", "norm.linear"]

# Which linear layers get a LoRA, by name inside the blocks (facts: kontext-facts.md section 7).
LORA_TARGETS = {
    # diffusers' train_dreambooth_lora_flux_kontext.py default: image-stream attention projections
    "attention": (DOUBLE_BLOCK_ATTENTION, SINGLE_BLOCK_ATTENTION),
    "attention+text": (DOUBLE_BLOCK_ATTENTION + DOUBLE_BLOCK_CONTEXT_ATTENTION, SINGLE_BLOCK_ATTENTION),
    "all-linear": (DOUBLE_BLOCK_ATTENTION + DOUBLE_BLOCK_CONTEXT_ATTENTION + DOUBLE_BLOCK_REST,
                   SINGLE_BLOCK_ATTENTION + SINGLE_BLOCK_REST),
}
CHECKPOINT_PREFIX = "step-"
# Settings that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "eval_every", "keep_checkpoints", "compile_blocks",
                     "gradient_checkpointing", "checkpoint_fraction")


@dataclass
class TrainConfig:
    """Every knob of a LoRA run; the defaults follow diffusers' Kontext LoRA script where it has one."""

    steps: int = 200
    batch_size: int = 1
    learning_rate: float = 1e-4
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
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    seed: int = 0
    max_sequence_length: int = 512

    def __post_init__(self):
        if self.targets not in LORA_TARGETS:
            raise ValueError(f"targets={self.targets!r}: use one of {sorted(LORA_TARGETS)}")
        for name in ("steps", "batch_size", "rank", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r}: use auto, bf16, fp16 or no")
        if self.fused_optimizer not in ("auto", "yes", "no"):
            raise ValueError(f"fused_optimizer={self.fused_optimizer!r}: use auto, yes or no")
        if not 0.0 <= self.checkpoint_fraction <= 1.0:
            raise ValueError(f"checkpoint_fraction must lie in [0, 1], got {self.checkpoint_fraction}")


@dataclass
class CachedPair:
    """One pair, encoded once: latents [1, 16, h, w] and text embeddings, on the CPU."""

    target_latents: torch.Tensor
    context_latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor

    @property
    def size_key(self) -> tuple:
        return tuple(self.target_latents.shape[2:]) + tuple(self.context_latents.shape[2:])


@dataclass
class TrainResult:
    output_dir: pathlib.Path
    history: list[dict] = field(default_factory=list)  # one entry per step: loss, sigmas, per-sample losses
    evaluations: list[dict] = field(default_factory=list)
    interrupted: bool = False

    @property
    def lora_file(self) -> pathlib.Path:
        return self.output_dir / "pytorch_lora_weights.safetensors"


def lora_target_regex(targets: str) -> str:
    """A regex that peft matches against full module names: only layers inside the blocks."""
    double, single = LORA_TARGETS[targets]
    alternatives = lambda names: "|".join(re.escape(n) for n in names)  # noqa: E731
    return (rf"^(transformer_blocks\.\d+\.({alternatives(double)})"
            rf"|single_transformer_blocks\.\d+\.({alternatives(single)}))$")


def add_lora(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the transformer, add a LoRA adapter, return the trainable (fp32) parameters."""
    transformer.requires_grad_(False)
    torch.manual_seed(config.seed)  # peft draws the initial LoRA A matrices from the global generator
    transformer.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha or config.rank,
                                       init_lora_weights="gaussian", target_modules=lora_target_regex(config.targets)))
    cast_training_params(transformer, dtype=torch.float32)  # LoRA weights train in fp32 even in a bf16 model
    return [p for p in transformer.parameters() if p.requires_grad]


@torch.no_grad()
def cache_pairs(pipe: FluxKontextPipeline, pairs: list[EditPair], max_sequence_length: int = 512) -> list[CachedPair]:
    """Encode every pair once: VAE posterior mode (shifted, scaled) and CLIP/T5 embeddings."""
    vae, cached = pipe.vae, []
    for pair in pairs:
        check_pair(pair)
        width, height = pair.source.size
        images = pipe.image_processor.preprocess([pair.source, pair.target], height, width)  # [2, 3, H, W] in [-1, 1]
        latents = vae.encode(images.to(pipe.device, vae.dtype)).latent_dist.mode()  # [2, 16, H/8, W/8]
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        prompt_embeds, pooled, _ = pipe.encode_prompt(prompt=pair.instruction, prompt_2=None, device=pipe.device,
                                                      max_sequence_length=max_sequence_length)
        cached.append(CachedPair(latents[1:].cpu(), latents[:1].cpu(), prompt_embeds.cpu(), pooled.cpu()))
    return cached


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random source of one step: the same (seed, step) gives the same draws on any run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def draw_batch(cache: list[CachedPair], batch_size: int, generator: torch.Generator) -> EditBatch:
    """batch_size pairs of one size (the first drawn pair fixes the size), stacked on the CPU."""
    first = int(torch.randint(len(cache), (1,), generator=generator))
    same_size = [i for i, pair in enumerate(cache) if pair.size_key == cache[first].size_key]
    picks = [first] + [same_size[int(i)] for i in torch.randint(len(same_size), (batch_size - 1,), generator=generator)]
    stack = lambda name: torch.cat([getattr(cache[i], name) for i in picks])  # noqa: E731
    return EditBatch(stack("target_latents"), stack("context_latents"), stack("prompt_embeds"),
                     stack("pooled_prompt_embeds"))


def training_step_inputs(cache: list[CachedPair], config: TrainConfig, step: int, num_processes: int = 1,
                         process_index: int = 0) -> tuple[EditBatch, torch.Tensor, torch.Tensor]:
    """This process's share of step `step`: (batch, sigmas [B], noise [B, 16, h, w])."""
    generator = step_generator(config.seed, step)
    batch = draw_batch(cache, config.batch_size * num_processes, generator)
    u = sample_u(config.density, config.batch_size * num_processes, logit_mean=config.logit_mean,
                 logit_std=config.logit_std, mode_scale=config.mode_scale, generator=generator)
    sigmas = sigmas_from_u(u)
    noise = torch.randn(batch.target_latents.shape, generator=generator)
    share = slice(process_index * config.batch_size, (process_index + 1) * config.batch_size)
    batch = EditBatch(batch.target_latents[share], batch.context_latents[share], batch.prompt_embeds[share],
                      batch.pooled_prompt_embeds[share])
    return batch, sigmas[share], noise[share]


def enable_checkpointing(transformer, fraction: float = 1.0) -> int:
    """Gradient checkpointing on a share of the blocks, spread evenly; returns how many.

    Recomputing a block in the backward pass saves its activations' memory and costs one more
    forward of that block. Where memory allows, checkpointing fewer blocks is faster.
    """
    blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
    count = round(fraction * len(blocks))
    chosen = {id(blocks[int(i * len(blocks) / count)]) for i in range(count)} if count else set()

    def checkpoint_some(block, *args):
        if id(block) in chosen:
            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)
        return block(*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_some)
    return count


def make_optimizer(parameters, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused (one kernel for all parameters) on a GPU unless switched off."""
    fused = config.fused_optimizer == "yes" or (config.fused_optimizer == "auto" and device.type == "cuda")
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay,
                             fused=fused or None)


def optimizer_step(model, parameters, optimizer, batch: EditBatch, sigmas, noise, config: TrainConfig,
                   accelerator: Accelerator) -> torch.Tensor:
    """Forward, backward, clip, AdamW update: one training step. Returns the per-sample losses [B]."""
    with accelerator.autocast():
        per_sample = kontext_loss(model, batch, sigmas, noise, config.guidance,
                                  loss_weighting(config.loss_weighting, sigmas))
    accelerator.backward(per_sample.mean())
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return per_sample.detach()


def prepare_transformer(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """LoRA, checkpointing and compilation as the config asks; returns the trainable parameters."""
    if config.gradient_checkpointing:
        enable_checkpointing(transformer, config.checkpoint_fraction)
    parameters = add_lora(transformer, config)
    if config.compile_blocks:
        transformer.compile_repeated_blocks(fullgraph=False, dynamic=False)
    return parameters


def mixed_precision(config: TrainConfig) -> str:
    if config.mixed_precision != "auto":
        return config.mixed_precision
    return "bf16" if torch.cuda.is_available() else "no"


def checkpoints(output_dir: pathlib.Path) -> list[pathlib.Path]:
    folder = output_dir / "checkpoints"
    return sorted(folder.glob(f"{CHECKPOINT_PREFIX}*")) if folder.is_dir() else []


def save_checkpoint(output_dir: pathlib.Path, step: int, transformer, optimizer, result: TrainResult,
                    config: TrainConfig, keep: int) -> pathlib.Path:
    """LoRA weights, optimizer state and history after `step` completed steps."""
    folder = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()}, folder / "lora.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    state = dict(step=step, config=dataclasses.asdict(config), history=result.history, evaluations=result.evaluations)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    for old in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    return folder


def load_checkpoint(folder: pathlib.Path, transformer, optimizer, result: TrainResult, config: TrainConfig) -> int:
    """Restore LoRA weights, optimizer and history; return the number of completed steps."""
    state = json.loads((folder / "trainer_state.json").read_text())
    changed = {k for k, v in dataclasses.asdict(config).items()
               if k not in RESUMABLE_CHANGES and state["config"].get(k, v) != v}
    if changed:
        raise ValueError(f"cannot resume from {folder}: the run used different {', '.join(sorted(changed))}; "
                         "use the same settings or a new output folder")
    device = next(p for p in transformer.parameters() if p.requires_grad).device
    set_peft_model_state_dict(transformer, load_file(folder / "lora.safetensors", device=str(device)))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    result.history, result.evaluations = state["history"], state["evaluations"]
    return state["step"]


def train_lora(pipe: FluxKontextPipeline, data: list[EditPair] | list[CachedPair], config: TrainConfig, output_dir,
               *, resume: bool = False, evaluate=None, progress: bool = True, stop_after: int | None = None,
               accelerator: Accelerator | None = None) -> TrainResult:
    """Train a LoRA on `pipe.transformer` in place and save it to `output_dir`.

    data: edit pairs (encoded here) or an already computed cache_pairs() list.
    resume: continue from the newest checkpoint in output_dir (same settings required).
    evaluate: optional callable(pipe, step) -> dict, called every config.eval_every steps and at the end.
    stop_after: stop (as if interrupted) after this many steps of this call; for demonstrations and tests.
    """
    output_dir = pathlib.Path(output_dir)
    if not data:
        raise ValueError("no training pairs given")
    cache = data if isinstance(data[0], CachedPair) else cache_pairs(pipe, data, config.max_sequence_length)
    accelerator = accelerator or Accelerator(mixed_precision=mixed_precision(config), cpu=not torch.cuda.is_available())
    avoid_failing_attention_backends(accelerator.device)
    transformer = pipe.transformer
    parameters = prepare_transformer(transformer, config)
    optimizer = make_optimizer(parameters, config, accelerator.device)
    model, optimizer = accelerator.prepare(transformer, optimizer)
    result = TrainResult(output_dir)
    start = 0
    if resume and checkpoints(output_dir):
        start = load_checkpoint(checkpoints(output_dir)[-1], transformer, optimizer, result, config)
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)

    model.train()
    bar = tqdm(total=config.steps, initial=start, disable=not progress or not accelerator.is_main_process,
               desc="LoRA", unit="step")
    for step in range(start, end):
        batch, sigmas, noise = training_step_inputs(cache, config, step, accelerator.num_processes,
                                                    accelerator.process_index)
        dtype = next(model.parameters()).dtype
        batch, sigmas, noise = batch.to(accelerator.device, dtype), sigmas.to(accelerator.device), noise.to(
            accelerator.device, dtype)
        per_sample = optimizer_step(model, parameters, optimizer, batch, sigmas, noise, config, accelerator)
        loss = per_sample.mean()
        result.history.append(dict(step=step + 1, loss=round(loss.item(), 6),
                                   sigmas=[round(s, 4) for s in sigmas.tolist()],
                                   losses=[round(v, 6) for v in per_sample.float().tolist()]))
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and accelerator.is_main_process:
            save_checkpoint(output_dir, done, transformer, optimizer, result, config, config.keep_checkpoints)
        if evaluate is not None and config.eval_every and done % config.eval_every == 0 and done < config.steps:
            model.eval()
            result.evaluations.append(dict(step=done, **evaluate(pipe, done)))
            model.train()
    bar.close()
    model.eval()
    if end < config.steps:
        result.interrupted = True
        return result
    if accelerator.is_main_process:
        save_checkpoint(output_dir, config.steps, transformer, optimizer, result, config, config.keep_checkpoints)
        FluxKontextPipeline.save_lora_weights(output_dir, transformer_lora_layers=get_peft_model_state_dict(
            accelerator.unwrap_model(model)), safe_serialization=True)
        (output_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    if evaluate is not None:
        result.evaluations.append(dict(step=config.steps, **evaluate(pipe, config.steps)))
    return result


def loss_by_sigma(history: list[dict], bins: int = 10) -> list[tuple[float, float, int]]:
    """(bin centre, mean loss, count) of the per-sample losses, binned by their noise level sigma."""
    sums, counts = [0.0] * bins, [0] * bins
    for entry in history:
        for sigma, loss in zip(entry["sigmas"], entry["losses"]):
            index = min(int(sigma * bins), bins - 1)
            sums[index] += loss
            counts[index] += 1
    return [((i + 0.5) / bins, sums[i] / counts[i] if counts[i] else math.nan, counts[i]) for i in range(bins)]
