"""A Kontext LoRA trainer, written to be read.

    pairs  -> cache_pairs()      latents (VAE posterior mode, shifted and scaled) and text
                                 embeddings, computed once: the encoders can leave the GPU
    config -> add_lora()         peft LoRA on named modules of the transformer
           -> train_lora()       the Kontext objective (kontext_objective.kontext_loss) with
                                 AdamW, bf16 autocast on GPU, gradient clipping, checkpoints
                                 and exact resume, built on accelerate
           -> save_lora_weights  a file (with its LoRA config as metadata: rank, alpha, layers)
                                 that a stock FluxKontextPipeline loads with load_lora_weights()

Every random draw of step s comes from a generator seeded with (seed, s): a run resumed
from a checkpoint takes the same steps as one that was never interrupted.
"""

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
import uuid
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
from .recipes import LORA_TARGETS, TrainConfig, learning_rate_at  # noqa: F401  (TrainConfig lives in recipes: no torch there)
from ..lab.harness import avoid_failing_attention_backends
from .kontext_objective import EditBatch, kontext_loss
from .timestep_sampling import loss_weighting, sample_u, sigmas_from_u

CHECKPOINT_PREFIX = "step-"
CONFIG_FILE = "train_config.json"
LORA_FILE = "pytorch_lora_weights.safetensors"
OWN_FILES = (LORA_FILE, CONFIG_FILE, "checkpoints")  # what the trainer writes into its output folder
# Settings that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "eval_every", "keep_checkpoints", "compile_blocks",
                     "gradient_checkpointing", "checkpoint_fraction")


class OutputFolderError(ValueError):
    """The output folder cannot take this run; the message says what to do."""


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
    start_step: int = 0  # the step this call began at (> 0 when resumed)
    checkpoint: pathlib.Path | None = None  # the newest checkpoint written (after an interruption: where to resume)

    @property
    def steps_done(self) -> int:
        """Steps completed in all, resumed ones included."""
        return len(self.history)

    @property
    def lora_file(self) -> pathlib.Path:
        return self.output_dir / LORA_FILE


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


def checkpoint_step(folder: pathlib.Path) -> int | None:
    """The step number in a checkpoint folder's name (step-0000600 -> 600), None for other names."""
    digits = folder.name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if folder.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def checkpoint_run(folder: pathlib.Path) -> str | None:
    """The id of the run that wrote a checkpoint (None if unreadable)."""
    try:
        return json.loads((folder / "trainer_state.json").read_text()).get("run")
    except (OSError, ValueError):
        return None


def checkpoints(output_dir, run: str | None = None) -> list[pathlib.Path]:
    """The checkpoints in output_dir (of one run, if given), oldest first by step number."""
    folder = pathlib.Path(output_dir) / "checkpoints"
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if checkpoint_step(p) is not None] if folder.is_dir() else []
    if run is not None:
        found = [p for p in found if checkpoint_run(p) == run]
    return sorted(found, key=checkpoint_step)


def save_checkpoint(output_dir: pathlib.Path, step: int, transformer, optimizer, result: TrainResult,
                    config: TrainConfig, keep: int, run: str | None = None) -> pathlib.Path:
    """LoRA weights, optimizer state and history after `step` completed steps; keeps this run's newest `keep`."""
    folder = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()}, folder / "lora.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    state = dict(step=step, run=run, config=dataclasses.asdict(config), history=result.history,
                 evaluations=result.evaluations)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    for old in checkpoints(output_dir, run)[:-keep]:
        shutil.rmtree(old)
    return folder


def config_changes(saved: dict, config: TrainConfig) -> list[str]:
    """The settings in which `config` differs from a saved run's, other than those a resume may change."""
    return sorted(k for k, v in dataclasses.asdict(config).items()
                  if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)


def describe_changes(saved: dict, config: TrainConfig, changed: list[str]) -> str:
    return ", ".join(f"{k} {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)


def load_checkpoint(folder: pathlib.Path, transformer, optimizer, result: TrainResult, config: TrainConfig) -> int:
    """Restore LoRA weights, optimizer and history; return the number of completed steps."""
    state = json.loads((folder / "trainer_state.json").read_text())
    changed = config_changes(state["config"], config)
    if changed:
        raise OutputFolderError(f"cannot resume from {folder}: the run used different {', '.join(changed)} "
                                f"({describe_changes(state['config'], config, changed)}); use the same settings, "
                                "or start over with --overwrite (overwrite=True) or a new output folder")
    device = next(p for p in transformer.parameters() if p.requires_grad).device
    set_peft_model_state_dict(transformer, load_file(folder / "lora.safetensors", device=str(device)))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    result.history, result.evaluations = state["history"], state["evaluations"]
    return state["step"]


def output_problem(output_dir, resume: bool = False, overwrite: bool = False) -> str | None:
    """Why output_dir cannot take a run (None if it can); checks only, writes nothing."""
    output_dir = pathlib.Path(output_dir)
    if resume and overwrite:
        return "resume and overwrite exclude each other: resume continues the run in the folder, overwrite deletes it"
    for parent in [output_dir, *output_dir.parents]:
        if parent.exists() and not parent.is_dir():
            return (f"output {output_dir} is a file, not a folder; choose a folder path" if parent == output_dir
                    else f"cannot create the output folder {output_dir}: {parent} is a file")
        if parent.exists():
            break
    if not output_dir.is_dir():
        return None
    contents = sorted(p.name for p in output_dir.iterdir())
    if not contents or overwrite:
        return None
    if resume:
        if (output_dir / CONFIG_FILE).is_file() or checkpoints(output_dir):
            return None
        return (f"{output_dir} holds files ({', '.join(contents[:4])}) but no run of this trainer to resume (no "
                f"{CONFIG_FILE}, no checkpoints); choose another output folder")
    return (f"output folder {output_dir} already holds files ({', '.join(contents[:4])}"
            f"{', ...' if len(contents) > 4 else ''}); continue the run in it with --resume (resume=True; same "
            "settings), replace it with --overwrite (overwrite=True), or choose a new output folder")


def ensure_writable(output_dir) -> pathlib.Path:
    """Create output_dir and write a probe file into it, so that a run cannot fail only when it saves."""
    output_dir = pathlib.Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputFolderError(f"cannot write to the output folder {output_dir} ({error.strerror}); choose a "
                                "folder you may write to") from error
    return output_dir


def is_main_launch_process() -> bool:
    """False in the second and later processes of torchrun / accelerate launch (they set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def check_output(output_dir, resume: bool = False, overwrite: bool = False,
                 config: TrainConfig | None = None) -> pathlib.Path:
    """Raise OutputFolderError unless output_dir can take the run (with `config`, when resuming, that the
    settings match the run's); creates output_dir (empty) if missing."""
    problem = output_problem(output_dir, resume, overwrite)
    if not problem and resume and config is not None:
        problem = resume_problem(pathlib.Path(output_dir), config)
    if problem:
        raise OutputFolderError(problem)
    return ensure_writable(output_dir)


def remove_previous_run(output_dir: pathlib.Path) -> None:
    """Delete what the trainer wrote into output_dir (LoRA, config, checkpoints); other files stay."""
    for name in OWN_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def resume_problem(output_dir: pathlib.Path, config: TrainConfig) -> str | None:
    """Why the run in output_dir cannot be resumed with `config` (None if it can, or if there is none)."""
    config_file = output_dir / CONFIG_FILE
    if config_file.is_file():
        saved = json.loads(config_file.read_text())
        changed = config_changes(saved, config)
        if changed:
            return (f"cannot resume the run in {output_dir}: it used different {', '.join(changed)} "
                    f"({describe_changes(saved, config, changed)}); use the same settings, or start over with "
                    "--overwrite (overwrite=True) or a new output folder")
    found = checkpoints(output_dir)
    if found and checkpoint_step(found[-1]) > config.steps:
        return (f"the run in {output_dir} is already at step {checkpoint_step(found[-1])}, past steps={config.steps}; "
                f"ask for {checkpoint_step(found[-1])} steps or more to continue it")
    return None


def prepare_output(output_dir, config: TrainConfig, resume: bool = False,
                   overwrite: bool = False) -> pathlib.Path | None:
    """Check and set up output_dir for a run; return the checkpoint to resume from (None: start at step 0)."""
    output_dir = check_output(output_dir, resume, overwrite, config)
    if overwrite:
        remove_previous_run(output_dir)
    latest = None
    if resume:
        found = checkpoints(output_dir)
        latest = found[-1] if found else None
        if latest is None:
            print(f"nothing to resume in {output_dir}: no checkpoint saved yet; starting at step 0", file=sys.stderr)
    (output_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return latest


@contextlib.contextmanager
def finish_step_on_interrupt(enabled: bool = True):
    """While inside, a first Ctrl-C (SIGINT) only sets stop["requested"], so the loop can end after a whole
    step and save it; a second Ctrl-C interrupts at once. Only in the main thread of a single process, and not
    where SIGINT is ignored (``nohup``, ``cmd &`` in a script): that choice is left as it is."""
    stop = {"requested": False}
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    if not enabled or not main_thread or previous is signal.SIG_IGN:
        yield stop
        return

    def handler(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def lora_metadata(model) -> dict:
    """The peft LoraConfig as a dict: saved with the weights, it tells diffusers' loader rank, alpha and targets
    (without it diffusers assumes alpha = rank)."""
    return model.peft_config["default"].to_dict()


def train_lora(pipe: FluxKontextPipeline, data: list[EditPair] | list[CachedPair], config: TrainConfig, output_dir,
               *, resume: bool = False, overwrite: bool = False, evaluate=None, progress: bool = True,
               stop_after: int | None = None, accelerator: Accelerator | None = None) -> TrainResult:
    """Train a LoRA on `pipe.transformer` in place and save it to `output_dir`.

    data: edit pairs (encoded here) or an already computed cache_pairs() list.
    output_dir: must be empty or new, unless resume (continue the run in it; same settings required,
    checked) or overwrite (delete the trainer's files in it first).
    evaluate: optional callable(pipe, step) -> dict, called every config.eval_every steps and at the end.
    stop_after: stop (as if killed, without a checkpoint) after this many steps of this call; for
    demonstrations and tests.
    Ctrl-C: the run ends after the current step, saves a checkpoint and returns with interrupted=True.
    """
    output_dir = pathlib.Path(output_dir)
    if not data:
        raise ValueError("no training pairs given")
    accelerator = accelerator or Accelerator(mixed_precision=mixed_precision(config), cpu=not torch.cuda.is_available())
    resume_from = None
    if accelerator.is_main_process:  # before any expensive work
        resume_from = prepare_output(output_dir, config, resume, overwrite)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process and resume:
        found = checkpoints(output_dir)
        resume_from = found[-1] if found else None
    cache = data if isinstance(data[0], CachedPair) else cache_pairs(pipe, data, config.max_sequence_length)
    avoid_failing_attention_backends(accelerator.device)
    transformer = pipe.transformer
    parameters = prepare_transformer(transformer, config)
    optimizer = make_optimizer(parameters, config, accelerator.device)
    model, optimizer = accelerator.prepare(transformer, optimizer)
    result = TrainResult(output_dir)
    run = uuid.uuid4().hex
    start = 0
    if resume_from is not None:
        start = load_checkpoint(resume_from, transformer, optimizer, result, config)
        run = checkpoint_run(resume_from) or run
    result.start_step = start
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)

    def checkpoint(done: int) -> None:
        if accelerator.is_main_process:
            result.checkpoint = save_checkpoint(output_dir, done, transformer, optimizer, result, config,
                                                config.keep_checkpoints, run)

    model.train()
    bar = tqdm(total=config.steps, initial=start, disable=not progress or not accelerator.is_main_process,
               desc="LoRA", unit="step")
    done, updating = start, False
    with finish_step_on_interrupt(accelerator.num_processes == 1) as stop:
        try:
            for step in range(start, end):
                batch, sigmas, noise = training_step_inputs(cache, config, step, accelerator.num_processes,
                                                            accelerator.process_index)
                dtype = next(model.parameters()).dtype
                batch, sigmas, noise = batch.to(accelerator.device, dtype), sigmas.to(accelerator.device), noise.to(
                    accelerator.device, dtype)
                updating = True
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(config, step)
                per_sample = optimizer_step(model, parameters, optimizer, batch, sigmas, noise, config, accelerator)
                loss = per_sample.mean()
                result.history.append(dict(step=step + 1, loss=round(loss.item(), 6),
                                           sigmas=[round(s, 4) for s in sigmas.tolist()],
                                           losses=[round(v, 6) for v in per_sample.float().tolist()]))
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                done, updating = step + 1, False
                if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
                    checkpoint(done)
                if evaluate is not None and config.eval_every and done % config.eval_every == 0 and done < config.steps:
                    model.eval()
                    result.evaluations.append(dict(step=done, **evaluate(pipe, done)))
                    model.train()
                if stop["requested"] and done < config.steps:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            model.eval()
            result.interrupted = True
            if done > start and not updating:
                checkpoint(done)
            else:  # nothing new, or stopped inside an update (weights may be half-updated): keep the last one
                found = checkpoints(output_dir, run) or ([resume_from] if resume_from else [])
                result.checkpoint = found[-1] if found else None
            print(f"LoRA training interrupted after step {done} of {config.steps}; "
                  f"checkpoint: {result.checkpoint or 'none yet'}", file=sys.stderr)
            return result
    bar.close()
    model.eval()
    if end < config.steps:
        result.interrupted = True
        return result
    if accelerator.is_main_process:
        checkpoint(config.steps)
        unwrapped = accelerator.unwrap_model(model)
        FluxKontextPipeline.save_lora_weights(output_dir, transformer_lora_layers=get_peft_model_state_dict(unwrapped),
                                              transformer_lora_adapter_metadata=lora_metadata(unwrapped),
                                              safe_serialization=True)
        (output_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))
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
