"""Train the miniature Kontext on the toy editing world: first the VAE, then the transformer.

    python -m kontext_teach.toy.mini_training --out runs/mini            # defaults: about 25 min on 2 CPU cores
    python -m kontext_teach.toy.mini_training --help                     # every option with its default

Defaults: VAE widths 16,32,64,64 (1.0 M parameters), 6 minutes, batch 16, lr 1e-3;
transformer 12 heads x 16 = hidden 192, 2 double + 3 single blocks, RoPE axes (4, 6, 6)
(4.7 M parameters), 14 minutes, batch 32, lr 5e-4, EMA 0.999, 4000 training pairs at 64 px;
evaluation on 40 held-out pairs per family with 28 sampling steps. Besides the two time budgets,
encoding the pairs takes about a minute and the evaluation two to three (on 2 CPU cores).

1. VAE (diffusers ``AutoencoderKL``, 16 latent channels, 8x down): reconstruction MSE plus a
   small KL term, on fresh toy-world pictures every step. Afterwards its latent shift and scale
   are measured on data and written into its config, as FLUX's VAE carries 0.1159 / 0.3611:
   ``z = (mode - shift_factor) * scaling_factor`` then has mean 0 and std 1.
2. Transformer (diffusers ``FluxTransformer2DModel``) with the Kontext objective, as in
   diffusers' ``train_dreambooth_lora_flux_kontext.py``: sigma from a logit-normal density,
   ``x_sigma = (1 - sigma) x0 + sigma noise`` for the target, the clean source tokens
   concatenated after the noisy target tokens (ids[..., 0] = 1 for the source), the prediction
   sliced to the target tokens, regressed on ``noise - x0``; an EMA of the weights is what gets
   saved. The text encoders (the embedded CLIP and T5) stay frozen; their outputs are computed
   once per instruction.
3. Save a ``FluxKontextPipeline`` folder (``save_pretrained``; weights in fp16 by default, the
   frozen parts rounded to that precision before training so that training sees what ships),
   reload it, and evaluate it on held-out pairs through the real pipeline: a table per edit
   family with the copy baseline and the VAE ceiling.

Guidance: by default the transformer phase draws the guidance value from ``--guidance-range``, so
any value in that range works and none changes much. The shipped miniature is guidance-distilled
instead, as FLUX.1 [dev] is: a CFG teacher (``--prompt-dropout 0.1 --guidance-range 1 1``), then
``--distill-minutes`` trains a student on the teacher's two-pass guided output for random g
(``--teacher`` distils an existing teacher; the Makefile's ``MINI_ARGS`` hold the whole recipe).
The T5 prompt length is ``--text-length`` (24; every toy instruction fits in 16), and
``--long-text-lengths 128,512`` mixes in longer paddings so that the pipeline's default 512 works;
the record's ``text_lengths`` says which lengths a model saw.

Deeper models without starting over: ``--transformer FOLDER --add-single-blocks N`` appends N single
blocks that start as the identity (their output projection zeroed) and trains on from there.

Binding the shape word: ``--grounding-weight W`` adds W times an auxiliary loss (``toy.grounding``):
a training-only linear head on the context tokens' last hidden states must say which tokens the
edit changes. ``--perception-weight W`` adds W times a second one (``toy.perception``): a linear head
on the context tokens after block ``--perception-block`` must say how much of each token is
background, circle, square or triangle, the distinction a probe finds missing in the trained
teacher. Both heads are dropped afterwards; the saved transformer is unchanged in form.
``--kind-weights circle+square=3`` draws the pairs whose scene holds exactly those kinds three
times as often: the look-alikes that ``miniature_report``'s ``binding`` part shows it confuses.
``--scene-style wide`` trains on ``toy_world.WIDE_STYLE`` scenes (an augmentation towards scenes the
default generator never draws; evaluations stay on the default world and the drawn renderer).

On a GPU the model is far too small to keep the card busy, so use large batches and many
pairs (``--batch 256 --train-pairs 60000 --workers 4``; ``scripts/gpu_session.sh`` runs the
recipe on the workplace's GPU machine; notebook A1 shows every run of the shipped weights).

Runs on CPU or a GPU (chosen automatically); reproducible from ``--seed`` when the step limits
end the phases (time budgets end them by the clock, and the learning rate follows the clock).
"""

import argparse
import copy
import dataclasses
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxKontextPipeline, FluxTransformer2DModel
from tqdm.auto import tqdm

from . import miniature, toy_world
from .edit_metric import TEXT_LENGTH, evaluate, format_table
from .grounding import GroundingProbe
from .guidance import TEACHER_FOLDER, cfg_velocity
from .perception import KindProbe, kind_shares
from ..lab.harness import avoid_failing_attention_backends, silence_libraries
from ..lab.loading import EMBEDDED_MODEL_DIR, load_pipeline
from ..packing import pack_latents
from ..position_ids import kontext_image_ids, text_ids, token_grid
from ..training.timestep_sampling import noisy_latents, sample_u, sigmas_from_u

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --- configs ----------------------------------------------------------------------------

def vae_config(channels=miniature.VAE["block_out_channels"], layers_per_block: int = 1) -> dict:
    """miniature.VAE with other widths: always 4 levels (8x down) and 16 latent channels, as FLUX."""
    channels = tuple(int(c) for c in channels)
    groups = miniature.VAE["norm_num_groups"]
    if len(channels) != 4 or any(c < groups or c % groups for c in channels):
        raise ValueError(f"the VAE needs 4 widths (4 levels = 8x down, as FLUX), each a multiple of "
                         f"{groups} (its GroupNorm groups); got {channels}")
    if layers_per_block < 1:
        raise ValueError(f"layers_per_block must be >= 1, got {layers_per_block}")
    return {**miniature.VAE, "block_out_channels": channels, "layers_per_block": layers_per_block}


def transformer_config(*, heads: int, head_dim: int, double_blocks: int, single_blocks: int,
                       rope_axes, text_dim: int, pooled_dim: int) -> dict:
    """miniature.TRANSFORMER with other widths and depths; text_dim / pooled_dim must match T5 / CLIP."""
    rope_axes = tuple(int(a) for a in rope_axes)
    if len(rope_axes) != 3 or sum(rope_axes) != head_dim or any(a <= 0 or a % 2 for a in rope_axes):
        raise ValueError(f"rope axes {rope_axes} must be 3 positive even numbers (virtual time, row, column) "
                         f"that sum to the head dim {head_dim}, e.g. (4, 6, 6) for 16 or (8, 12, 12) for 32")
    if min(heads, double_blocks, single_blocks) < 1:
        raise ValueError("heads, double_blocks and single_blocks must all be >= 1 (FLUX has both kinds of block)")
    return {**miniature.TRANSFORMER, "num_attention_heads": heads, "attention_head_dim": head_dim,
            "num_layers": double_blocks, "num_single_layers": single_blocks, "axes_dims_rope": rope_axes,
            "joint_attention_dim": text_dim, "pooled_projection_dim": pooled_dim}


def add_single_blocks(transformer: FluxTransformer2DModel, count: int) -> FluxTransformer2DModel:
    """A copy of `transformer` with `count` single-stream blocks appended, each starting as the identity.

    A single block adds ``gate * proj_out(...)`` to its input; with ``proj_out`` zeroed it adds nothing, so the
    deeper model computes exactly what the trained one did and training goes on from there (a depth-only
    "Net2Net" step: Chen et al., ICLR 2016). The other new weights keep their random initialisation, so
    ``proj_out``'s gradient is not zero.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int (single blocks to add), got {count!r}")
    config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
    config["num_single_layers"] = transformer.config.num_single_layers + count
    deeper = FluxTransformer2DModel(**config).to(device=transformer.device, dtype=transformer.dtype)
    missing, unexpected = deeper.load_state_dict(transformer.state_dict(), strict=False)
    first_new = transformer.config.num_single_layers
    new_prefixes = tuple(f"single_transformer_blocks.{i}." for i in range(first_new, config["num_single_layers"]))
    assert not unexpected and all(key.startswith(new_prefixes) for key in missing), (missing, unexpected)
    with torch.no_grad():
        for block in deeper.single_transformer_blocks[first_new:]:
            block.proj_out.weight.zero_()
            block.proj_out.bias.zero_()
    return deeper


def describe_transformer(transformer: FluxTransformer2DModel) -> str:
    """'4.66 M parameters, hidden 192, 2 double + 3 single blocks', read off the model itself."""
    config = transformer.config
    return (f"{count_parameters(transformer) / 1e6:.2f} M parameters, hidden "
            f"{config.num_attention_heads * config.attention_head_dim}, {config.num_layers} double + "
            f"{config.num_single_layers} single blocks")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU; use --device cpu (or auto)")
    return torch.device(name)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def round_weights(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Round every weight to `dtype` and back, in place: the module then computes what its saved copy will."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).to(tensor.dtype))
    return module


# --- schedule, progress, EMA -------------------------------------------------------------

def progress(step: int, max_steps: int | None, elapsed: float, seconds: float | None) -> float:
    """How far a phase is, in [0, 1]: the larger of steps done / step limit and time used / time budget."""
    fractions = [step / max_steps if max_steps else 0.0, elapsed / seconds if seconds else 0.0]
    return min(1.0, max(fractions))


def learning_rate(base: float, step: int, done: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from base down to base / 10 as `done` goes 0 -> 1."""
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return base * ramp * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


def check_limits(steps: int | None, seconds: float | None) -> None:
    if not steps and not seconds:
        raise ValueError("give a step limit, a time budget or both (e.g. --steps 2000 or --minutes 14); "
                         "otherwise training never ends")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current.detach(), 1 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Short memory at the start (the first weights are random), `decay` later: min(decay, (1 + t) / (10 + t))."""
    return min(decay, (1 + step) / (10 + step))


class PhaseClock:
    """Steps, elapsed time, a progress bar and a log cadence (20 lines a phase) for one training phase."""

    LOG_LINES = 20

    def __init__(self, name: str, max_steps: int | None, seconds: float | None, show: bool):
        check_limits(max_steps, seconds)
        self.max_steps, self.seconds, self.step, self.start = max_steps, seconds, 0, time.perf_counter()
        self.last_log = 0.0
        by_time = seconds is not None
        self.bar = tqdm(total=round(seconds) if by_time else max_steps, unit="s" if by_time else "step",
                        desc=name, disable=not show, file=sys.stdout, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def done(self) -> float:
        return progress(self.step, self.max_steps, self.elapsed, self.seconds)

    def running(self) -> bool:
        return self.done < 1.0

    def tick(self, **postfix) -> None:
        self.step += 1
        self.bar.set_postfix(step=self.step, **postfix, refresh=False)
        self.bar.update((min(round(self.elapsed), self.seconds) if self.seconds else self.step) - self.bar.n)

    def log_due(self) -> bool:
        """True every 1/20 of the phase (of its time budget if it has one, else of its steps)."""
        if self.seconds:
            due = self.elapsed - self.last_log >= self.seconds / self.LOG_LINES
        else:
            due = self.step % max(1, self.max_steps // self.LOG_LINES) == 0
        if due:
            self.last_log = self.elapsed
        return due

    def close(self) -> None:
        self.bar.close()


# --- images and latents ------------------------------------------------------------------

def to_model_images(pixels: np.ndarray, device=None) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1], the arithmetic of diffusers' VaeImageProcessor."""
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(0, 3, 1, 2)  # [B, 3, H, W] in [0, 1]
    return (2.0 * images - 1.0).to(device)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """What Kontext feeds the transformer: (posterior mode - shift) * scale, [B, 16, H/8, W/8]."""
    config = vae.config
    parts = [vae.encode(images[i:i + batch_size]).latent_dist.mode() for i in range(0, len(images), batch_size)]
    return (torch.cat(parts) - config.shift_factor) * config.scaling_factor


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, images: torch.Tensor) -> tuple[float, float]:
    """(shift_factor, scaling_factor) that give the posterior modes mean 0 and std 1 over `images`."""
    modes = torch.cat([vae.encode(images[i:i + 64]).latent_dist.mode() for i in range(0, len(images), 64)])
    return modes.mean().item(), 1.0 / modes.std().item()


def vae_psnr(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """PSNR (dB, pixels in [0, 1]) of the VAE's mode round trip, as Kontext encodes and decodes."""
    with torch.no_grad():
        decoded = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((decoded - images) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / mse)


# --- phase 1: the VAE --------------------------------------------------------------------

def vae_loss(vae: AutoencoderKL, images: torch.Tensor, kl_weight: float, generator: torch.Generator):
    """(loss, mse): reconstruction MSE of a sampled latent, plus kl_weight * KL per latent element."""
    posterior = vae.encode(images).latent_dist
    decoded = vae.decode(posterior.sample(generator)).sample  # [B, 3, H, W]
    mse = F.mse_loss(decoded, images)
    kl = posterior.kl().mean() / posterior.mean[0].numel()  # kl() sums over the latent elements
    return mse + kl_weight * kl, mse


def train_vae(vae: AutoencoderKL, *, device, seed: int = 0, size: int = toy_world.IMAGE_SIZE,
              batch_size: int = 16, lr: float = 1e-3, kl_weight: float = 1e-5, warmup: int = 50,
              steps: int | None = None, seconds: float | None = None, log=print, show: bool = True) -> list[dict]:
    """Train `vae` in place on fresh toy-world pictures; returns the logged history."""
    rng = np.random.default_rng([seed, 1])
    generator = torch.Generator(device).manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    clock, history, recent = PhaseClock("VAE", steps, seconds, show), [], []
    while clock.running():
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, clock.step, clock.done, warmup)
        images = to_model_images(toy_world.random_images(rng, batch_size, size), device)
        loss, mse = vae_loss(vae, images, kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        recent.append((loss.item(), mse.item()))
        clock.tick(loss=f"{loss.item():.4f}")
        if clock.log_due():
            history.append(_log_entry(clock, recent, ("loss", "mse")))
            log(f"vae step {clock.step:6d}  {clock.elapsed:7.1f}s  loss {history[-1]['loss']:.5f}  "
                f"PSNR {10 * math.log10(4 / history[-1]['mse']):.2f} dB")
            recent = []
    clock.close()
    vae.eval()
    return history


def _log_entry(clock: PhaseClock, recent: list, names: tuple) -> dict:
    means = np.mean(recent, axis=0)
    return {"step": clock.step, "seconds": round(clock.elapsed, 1), **{n: float(m) for n, m in zip(names, means)}}


# --- phase 2: the transformer ------------------------------------------------------------

@dataclasses.dataclass
class EditData:
    """Everything the transformer trains on, encoded once."""

    sources: torch.Tensor  # [N, L, 64] packed source (context) latents
    targets: torch.Tensor  # [N, L, 64] packed target latents
    prompt_index: torch.Tensor  # [N] row of the instruction in the text tables
    prompt_embeds: torch.Tensor  # [P, T, D_t5] T5 states of every distinct instruction (the base text length)
    pooled_embeds: torch.Tensor  # [P, D_clip] pooled CLIP vectors
    grid: tuple[int, int]  # (rows, cols) of packed tokens per image
    family_index: torch.Tensor | None = None  # [N] index of the pair's family in `families`
    families: tuple = ()
    changed: torch.Tensor | None = None  # [N, L] bool: target tokens that differ from the source's
    shaped: torch.Tensor | None = None  # [N, L] bool: tokens a shape covers, in the source or the target
    empty_row: int | None = None  # row of the empty instruction "" (prompt dropout, the CFG negative)
    long_prompt_embeds: dict = dataclasses.field(default_factory=dict)  # {T: [P, T, D_t5]} other text lengths
    kind_group: tuple = ()  # [N] the kinds of shape in each pair's source scene (toy_world.scene_kinds)
    kind_shares: torch.Tensor | None = None  # [N, L, 4] share of each source token that is background/each kind

    def states(self, length: int) -> torch.Tensor:
        """T5 states of every instruction at `length` tokens: [P, length, D_t5]."""
        return self.prompt_embeds if length == self.prompt_embeds.shape[1] else self.long_prompt_embeds[length]


@torch.no_grad()
def encode_instructions(pipe: FluxKontextPipeline, instructions: list[str], text_length: int, device):
    """(T5 states [P, T, D_t5], pooled CLIP [P, D_clip]) with the pipeline's own encode_prompt."""
    states, pooled, _ = pipe.encode_prompt(prompt=instructions, prompt_2=None, device=device,
                                           max_sequence_length=text_length)
    return states, pooled


CHANGE_THRESHOLD = 0.15  # mean |target - source| per packed token (latents have std 1) that counts as edited


def changed_tokens(sources: torch.Tensor, targets: torch.Tensor, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """[N, L] bool: packed tokens that the edit changes (the region an edit-weighted loss stresses)."""
    return (targets - sources).abs().mean(dim=-1) > threshold


def shape_tokens(pair, grid: tuple[int, int], min_share: float = 0.05) -> torch.Tensor:
    """[L] bool: the packed tokens whose 16 x 16 pixels a shape covers (at least min_share of them), in the
    source or the target scene: the shapes, also the ones an edit must leave alone."""
    rows, cols = grid
    covered = np.zeros((pair.source_scene.size,) * 2, np.float32)
    for shape in (*pair.source_scene.shapes, *pair.target_scene.shapes):
        covered = np.maximum(covered, toy_world.coverage(shape, pair.source_scene.size))
    share = covered.reshape(rows, covered.shape[0] // rows, cols, covered.shape[1] // cols).mean(axis=(1, 3))
    return torch.from_numpy(share.reshape(-1) > min_share)


def prepare_data(pipe: FluxKontextPipeline, vae: AutoencoderKL, pairs: list, text_length: int, device,
                 families=toy_world.BASE_FAMILIES, long_lengths=()) -> EditData:
    """Encode the pairs' images with `vae` and every instruction of `families` (and the empty one) with the
    frozen text encoders, at `text_length` T5 tokens and at each of `long_lengths`."""
    instructions = [line for family in families for line in toy_world.all_instructions(family)] + [""]
    row = {line: i for i, line in enumerate(instructions)}
    missing = {p.instruction for p in pairs} - row.keys()
    if missing:
        raise ValueError(f"pairs use instructions outside the families {tuple(families)}: {sorted(missing)[:3]}")
    states, pooled = encode_instructions(pipe, instructions, text_length, device)
    long_states = {length: encode_instructions(pipe, instructions, length, device)[0] for length in long_lengths}
    size = pairs[0].source.size[0]
    sources = pack_latents(encode_latents(vae, to_model_images(np.stack([np.asarray(p.source) for p in pairs]),
                                                                device)))  # [N, L, 64]
    targets = pack_latents(encode_latents(vae, to_model_images(np.stack([np.asarray(p.target) for p in pairs]),
                                                                device)))
    families = tuple(families)
    return EditData(sources=sources, targets=targets,
                    prompt_index=torch.tensor([row[p.instruction] for p in pairs], device=device),
                    prompt_embeds=states, pooled_embeds=pooled, grid=token_grid(size, size),
                    family_index=torch.tensor([families.index(p.family) for p in pairs], device=device),
                    families=families, changed=changed_tokens(sources, targets), empty_row=row[""],
                    shaped=torch.stack([shape_tokens(p, token_grid(size, size)) for p in pairs]).to(device),
                    long_prompt_embeds=long_states,
                    kind_group=tuple(toy_world.scene_kinds(p.source_scene) for p in pairs),
                    kind_shares=torch.stack([kind_shares(p.source_scene, token_grid(size, size))
                                             for p in pairs]).to(device))


def kontext_loss(transformer: FluxTransformer2DModel, x0: torch.Tensor, context: torch.Tensor,
                 prompt_embeds: torch.Tensor, pooled: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor,
                 guidance: torch.Tensor, img_ids: torch.Tensor, txt_ids: torch.Tensor,
                 token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The Kontext training loss of one batch: MSE between the target-token prediction and noise - x0.

    The objective of kontext_objective.kontext_loss (which the LoRA trainer uses), written for the
    full training's pre-packed tokens and per-sample guidance values, to keep the hot loop lean.
    token_weights [B, Lt] (optional) weigh each target token's squared error (a weighted mean).
    """
    prediction = predict_target_velocity(transformer, noisy_latents(x0, noise, sigmas), context, prompt_embeds,
                                         pooled, sigmas, guidance, img_ids, txt_ids)  # [B, Lt, 64]
    return weighted_mse(prediction, noise - x0, token_weights)


def predict_target_velocity(transformer, noisy: torch.Tensor, context: torch.Tensor, prompt_embeds: torch.Tensor,
                            pooled: torch.Tensor, sigmas: torch.Tensor, guidance: torch.Tensor,
                            img_ids: torch.Tensor, txt_ids: torch.Tensor) -> torch.Tensor:
    """The transformer's velocity on [noisy target; clean context], sliced to the target tokens: [B, Lt, 64]."""
    hidden = torch.cat([noisy, context], dim=1)  # [B, Lt + Lc, 64]: target first, then context
    prediction = transformer(hidden_states=hidden, timestep=sigmas, guidance=guidance, pooled_projections=pooled,
                             encoder_hidden_states=prompt_embeds, txt_ids=txt_ids, img_ids=img_ids,
                             return_dict=False)[0]  # [B, Lt + Lc, 64]
    return prediction[:, :noisy.shape[1]]


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, token_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over [B, L, 64]; with token_weights [B, L], the weighted mean over tokens."""
    per_token = (prediction.float() - target.float()).pow(2).mean(dim=-1)  # [B, L]
    if token_weights is None:
        return per_token.mean()
    return (per_token * token_weights).sum() / token_weights.sum()


@dataclasses.dataclass(frozen=True)
class BatchRecipe:
    """How a training step draws its batch: which pairs, which text length, which prompts are dropped."""

    batch_size: int = 32
    family_weights: tuple = ()  # one weight per family of the data (empty: every pair equally likely)
    long_lengths: tuple = ()  # other T5 lengths to train at (e.g. 512, the pipeline's default)
    long_share: float = 0.0  # share of steps that use one of long_lengths
    long_batch: int = 8  # pairs per long-text step (a 512-token step costs about 13 short ones)
    prompt_dropout: float = 0.0  # share of samples whose instruction is replaced by "" (what CFG needs)
    edit_weight: float = 0.0  # extra loss weight of the tokens the edit changes (0: plain MSE)
    shape_weight: float = 0.0  # extra loss weight of every token a shape covers (the ones to keep too)
    kind_weights: tuple = ()  # ((kinds, factor), ...): draw pairs whose scene holds exactly those kinds factor x as often


@dataclasses.dataclass
class Batch:
    index: torch.Tensor  # [B] pairs
    prompt_rows: torch.Tensor  # [B] rows of the text tables (after prompt dropout)
    length: int  # T5 tokens of this step


def pair_probabilities(data: EditData, family_weights, kind_weights=()) -> torch.Tensor:
    """[N] probability of drawing each pair: a family's weight shared among its pairs, then each pair whose
    scene holds exactly the kinds of a `kind_weights` entry (kinds, factor) drawn factor times as often."""
    if not family_weights:
        per_pair = torch.ones(len(data.targets), device=data.targets.device)
    else:
        if len(family_weights) != len(data.families) or min(family_weights) < 0 or sum(family_weights) <= 0:
            raise ValueError(f"give one non-negative weight per family {data.families}, not all zero; "
                             f"got {family_weights}")
        weights = torch.tensor(family_weights, dtype=torch.float32, device=data.targets.device)
        counts = torch.bincount(data.family_index, minlength=len(weights)).clamp(min=1).float()
        per_pair = (weights / counts)[data.family_index]
    for kinds, factor in kind_weights:
        if kinds not in toy_world.KIND_GROUPS or factor < 0:
            raise ValueError(f"kind weights are KINDS=FACTOR with KINDS one of {toy_world.KIND_GROUPS} and a "
                             f"non-negative FACTOR, e.g. circle+square=3; got {kinds}={factor}")
        chosen = torch.tensor([group == kinds for group in data.kind_group], device=per_pair.device)
        per_pair = torch.where(chosen, per_pair * factor, per_pair)
    if per_pair.sum() <= 0:
        raise ValueError("the family and kind weights leave no pair to draw")
    return per_pair / per_pair.sum()


def draw_batch(data: EditData, recipe: BatchRecipe, probabilities: torch.Tensor,
               generator: torch.Generator) -> Batch:
    """One step's pairs, text length and (possibly dropped) prompts, all from `generator`."""
    device = data.targets.device
    long_step = bool(recipe.long_lengths) and torch.rand((), generator=generator, device=device) < recipe.long_share
    if long_step:
        pick = int(torch.randint(len(recipe.long_lengths), (), generator=generator, device=device))
        length, size = recipe.long_lengths[pick], recipe.long_batch
    else:
        length, size = data.prompt_embeds.shape[1], recipe.batch_size
    index = torch.multinomial(probabilities, size, replacement=True, generator=generator)  # [B]
    rows = data.prompt_index[index]
    if recipe.prompt_dropout:
        dropped = torch.rand(size, generator=generator, device=device) < recipe.prompt_dropout
        rows = torch.where(dropped, torch.full_like(rows, data.empty_row), rows)
    return Batch(index, rows, length)


def token_weights(data: EditData, batch: Batch, edit_weight: float, shape_weight: float = 0.0) -> torch.Tensor | None:
    """[B, Lt]: 1 everywhere, + edit_weight on the tokens the edit changes, + shape_weight on every token a
    shape covers (None when both are 0)."""
    if not edit_weight and not shape_weight:
        return None
    weights = 1.0 + edit_weight * data.changed[batch.index].float()
    return weights + shape_weight * data.shaped[batch.index].float() if shape_weight else weights


def train_transformer(transformer: FluxTransformer2DModel, data: EditData, *, device, seed: int = 0,
                      batch_size: int = 32, lr: float = 5e-4, warmup: int = 100, ema_decay: float = 0.999,
                      guidance_range=(1.0, 4.0), logit_mean: float = 0.0, logit_std: float = 1.0,
                      steps: int | None = None, seconds: float | None = None, autocast_dtype=None,
                      recipe: BatchRecipe | None = None, grounding_weight: float = 0.0,
                      perception_weight: float = 0.0, perception_block: int = 1,
                      log=print, show: bool = True) -> tuple[FluxTransformer2DModel, list[dict]]:
    """Train `transformer` in place; returns (its EMA copy, the logged history).

    grounding_weight > 0 adds that much of grounding.GroundingProbe's loss (which context tokens the edit
    changes, for the samples that keep their instruction); perception_weight > 0 adds perception.KindProbe's
    loss (what kind of shape is under each context token, after block `perception_block`). The heads are
    trained with the transformer and dropped."""
    recipe = recipe or BatchRecipe(batch_size=batch_size)
    generator = torch.Generator(device).manual_seed(seed)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    probe = GroundingProbe(transformer).to(device).attach() if grounding_weight else None
    kinds = KindProbe(transformer, perception_block).to(device).attach() if perception_weight else None
    parameters = [*transformer.parameters(), *(probe.parameters() if probe else ()),
                  *(kinds.parameters() if kinds else ())]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    img_ids = kontext_image_ids(data.grid, data.grid).to(device)  # [Lt + Lc, 3], context first coordinate 1
    probabilities = pair_probabilities(data, recipe.family_weights, recipe.kind_weights)
    low, high = guidance_range
    transformer.train()
    clock, history, recent = PhaseClock("transformer", steps, seconds, show), [], []
    while clock.running():
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, clock.step, clock.done, warmup)
        batch = draw_batch(data, recipe, probabilities, generator)
        size = len(batch.index)
        x0 = data.targets[batch.index]
        sigmas = sigmas_from_u(sample_u("logit_normal", size, logit_mean=logit_mean, logit_std=logit_std,
                                        generator=generator, device=device)).to(device)  # [B]
        noise = torch.randn(x0.shape, generator=generator, device=device)
        guidance = low + (high - low) * torch.rand(size, generator=generator, device=device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = kontext_loss(transformer, x0, data.sources[batch.index], data.states(batch.length)[batch.prompt_rows],
                                data.pooled_embeds[batch.prompt_rows], sigmas, noise, guidance, img_ids,
                                text_ids(batch.length).to(device),
                                token_weights(data, batch, recipe.edit_weight, recipe.shape_weight))
            if probe:
                loss = loss + grounding_weight * probe.loss(data.changed[batch.index],
                                                            keep=batch.prompt_rows != data.empty_row)
            if kinds:
                loss = loss + perception_weight * kinds.loss(data.kind_shares[batch.index])
        optimizer_update(transformer, ema, optimizer, loss, ema_decay_at(clock.step, ema_decay))
        recent = log_progress(clock, loss.item(), recent, history, optimizer, log, "transformer")
    clock.close()
    for head in (probe, kinds):
        if head:
            head.detach()
    transformer.eval()
    return ema.eval(), history


def optimizer_update(model, ema, optimizer, loss: torch.Tensor, ema_decay: float) -> None:
    """Backward, clip the gradient norm to 1, AdamW step, then move the EMA copy towards the weights."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    ema_update(ema, model, ema_decay)


def log_progress(clock: PhaseClock, loss: float, recent: list, history: list, optimizer, log, name: str) -> list:
    """Count the step; every 1/20 of the phase log the mean loss since the last line. Returns the new `recent`."""
    recent.append((loss,))
    clock.tick(loss=f"{loss:.4f}")
    if not clock.log_due():
        return recent
    history.append(_log_entry(clock, recent, ("loss",)))
    log(f"{name} step {clock.step:6d}  {clock.elapsed:7.1f}s  loss {history[-1]['loss']:.5f}  "
        f"lr {optimizer.param_groups[0]['lr']:.2e}")
    return []


# --- phase 3: guidance distillation --------------------------------------------------------

def distill_guidance(teacher: FluxTransformer2DModel, student: FluxTransformer2DModel, data: EditData, *, device,
                     seed: int = 0, recipe: BatchRecipe, lr: float = 2e-4, warmup: int = 50,
                     ema_decay: float = 0.999, guidance_range=(1.0, 6.0), teacher_guidance: float = 1.0,
                     logit_mean: float = 0.0, logit_std: float = 1.0, steps: int | None = None,
                     seconds: float | None = None, autocast_dtype=None, log=print,
                     show: bool = True) -> tuple[FluxTransformer2DModel, list[dict]]:
    """Guidance distillation (Meng et al., CVPR 2023; how FLUX.1-dev got its guidance input): the student,
    given the guidance value g as an input, learns the teacher's two-pass CFG output at g for random g.

    The teacher (trained with prompt dropout) is evaluated twice, with the instruction and with "", on
    the same noisy target and clean context; the student once. Returns (the student's EMA, history).
    """
    generator = torch.Generator(device).manual_seed(seed)
    teacher = teacher.eval().requires_grad_(False)
    student.requires_grad_(True)
    ema = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    img_ids = kontext_image_ids(data.grid, data.grid).to(device)
    probabilities = pair_probabilities(data, recipe.family_weights, recipe.kind_weights)
    recipe = dataclasses.replace(recipe, prompt_dropout=0.0)  # the student always gets its instruction
    low, high = guidance_range
    student.train()
    clock, history, recent = PhaseClock("distillation", steps, seconds, show), [], []
    while clock.running():
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, clock.step, clock.done, warmup)
        batch = draw_batch(data, recipe, probabilities, generator)
        size, states = len(batch.index), data.states(batch.length)
        x0, context = data.targets[batch.index], data.sources[batch.index]
        sigmas = sigmas_from_u(sample_u("logit_normal", size, logit_mean=logit_mean, logit_std=logit_std,
                                        generator=generator, device=device)).to(device)
        noisy = noisy_latents(x0, torch.randn(x0.shape, generator=generator, device=device), sigmas)
        scale = low + (high - low) * torch.rand(size, generator=generator, device=device)  # [B]
        txt_ids = text_ids(batch.length).to(device)
        empty = torch.full_like(batch.prompt_rows, data.empty_row)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            with torch.no_grad():
                rows = torch.cat([batch.prompt_rows, empty])  # [2B]: conditional, then unconditional
                both = predict_target_velocity(teacher, noisy.repeat(2, 1, 1), context.repeat(2, 1, 1), states[rows],
                                               data.pooled_embeds[rows], sigmas.repeat(2),
                                               torch.full((2 * size,), teacher_guidance, device=device),
                                               img_ids, txt_ids)
                target = cfg_velocity(*both.float().chunk(2), scale)  # [B, Lt, 64]
            prediction = predict_target_velocity(student, noisy, context, states[batch.prompt_rows],
                                                 data.pooled_embeds[batch.prompt_rows], sigmas, scale, img_ids,
                                                 txt_ids)
            loss = weighted_mse(prediction, target, token_weights(data, batch, recipe.edit_weight,
                                                                       recipe.shape_weight))
        optimizer_update(student, ema, optimizer, loss, ema_decay_at(clock.step, ema_decay))
        recent = log_progress(clock, loss.item(), recent, history, optimizer, log, "distillation")
    clock.close()
    student.eval()
    return ema.eval(), history


# --- the whole recipe --------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.toy.mini_training",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="pipeline folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, the batches and the noise")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (None: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--size", type=int, default=toy_world.IMAGE_SIZE, help="image side in pixels")
    parser.add_argument("--save-dtype", choices=list(DTYPES), default="float16",
                        help="precision of the saved weights (the shipped model must stay under 30 MB)")
    parser.add_argument("--base", type=pathlib.Path, default=EMBEDDED_MODEL_DIR,
                        help="pipeline folder whose frozen text encoders, tokenizers and scheduler are used")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    vae = parser.add_argument_group("VAE")
    vae.add_argument("--vae", type=pathlib.Path, default=None,
                     help="reuse this trained VAE folder (e.g. OUT/vae of an earlier run) instead of training one")
    vae.add_argument("--vae-channels", default="16,32,64,64", help="widths of the 4 levels")
    vae.add_argument("--vae-layers", type=int, default=1, help="ResNet layers per level")
    vae.add_argument("--vae-minutes", type=float, default=6.0, help="time budget (0: none)")
    vae.add_argument("--vae-steps", type=int, default=None, help="step limit")
    vae.add_argument("--vae-batch", type=int, default=16, help="pictures per step")
    vae.add_argument("--vae-lr", type=float, default=1e-3, help="peak AdamW learning rate")
    vae.add_argument("--kl-weight", type=float, default=1e-5, help="weight of the KL per latent element")
    net = parser.add_argument_group("transformer")
    net.add_argument("--heads", type=int, default=12, help="attention heads; hidden = heads x head dim")
    net.add_argument("--head-dim", type=int, default=16, help="attention head dim (FLUX: 128)")
    net.add_argument("--double-blocks", type=int, default=2, help="double-stream blocks (FLUX: 19)")
    net.add_argument("--single-blocks", type=int, default=3, help="single-stream blocks (FLUX: 38)")
    net.add_argument("--rope-axes", default="4,6,6", help="RoPE dims (virtual time, row, column); sum = head dim")
    net.add_argument("--transformer", type=pathlib.Path, default=None,
                     help="continue training this transformer folder (e.g. OUT/transformer of an earlier run; its "
                          "training_record.json is kept in the new record) instead of starting from random weights")
    net.add_argument("--add-single-blocks", type=int, default=0,
                     help="with --transformer: append this many single blocks, each the identity at the start, "
                          "then train the deeper model")
    net.add_argument("--minutes", type=float, default=14.0, help="time budget (0: none)")
    net.add_argument("--steps", type=int, default=None, help="step limit")
    net.add_argument("--batch", type=int, default=32, help="pairs per step")
    net.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate (cosine to a tenth)")
    net.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    net.add_argument("--ema-decay", type=float, default=0.999, help="EMA of the weights (what is saved)")
    net.add_argument("--train-pairs", type=int, default=4000, help="training pairs, encoded once")
    net.add_argument("--workers", type=int, default=1, help="processes that render the training pairs")
    net.add_argument("--scene-style", choices=list(toy_world.STYLES), default="toy",
                     help="how the training scenes are drawn: toy (the world every evaluation uses) or wide (more "
                          "sizes, closer shapes, shapes cut by the border, two shapes of one colour, shades)")
    net.add_argument("--text-length", type=int, default=TEXT_LENGTH, help="T5 tokens (max_sequence_length)")
    net.add_argument("--guidance-range", type=float, nargs=2, default=(1.0, 4.0),
                     help="guidance values drawn uniformly during training")
    net.add_argument("--logit-mean", type=float, default=0.0, help="sigma = sigmoid(N(mean, std^2))")
    net.add_argument("--logit-std", type=float, default=1.0, help="see --logit-mean")
    net.add_argument("--family-weights", default="", help="share of training draws per family "
                     f"{','.join(toy_world.BASE_FAMILIES)} (e.g. 2,1,2,1; empty: every pair alike)")
    net.add_argument("--edit-weight", type=float, default=0.0,
                     help="extra loss weight on the tokens an edit changes (0: plain MSE)")
    net.add_argument("--shape-weight", type=float, default=0.0,
                     help="extra loss weight on every token a shape covers, also the shapes an edit keeps (0: none)")
    net.add_argument("--prompt-dropout", type=float, default=0.0,
                     help="share of samples trained with the empty instruction (a CFG teacher needs > 0)")
    net.add_argument("--kind-weights", default="",
                     help="draw pairs whose scene holds exactly these kinds more often, e.g. circle+square=3 "
                          "(the look-alikes); groups: " + ", ".join(toy_world.KIND_GROUPS))
    net.add_argument("--grounding-weight", type=float, default=0.0,
                     help="weight of the auxiliary grounding loss (toy.grounding: which context tokens change)")
    net.add_argument("--perception-weight", type=float, default=0.0,
                     help="weight of the auxiliary perception loss (toy.perception: which kind of shape is under "
                          "each context token)")
    net.add_argument("--perception-block", type=int, default=1,
                     help="block whose output the perception head reads (double-stream blocks first, then "
                          "single-stream; 1: the second double block)")
    net.add_argument("--long-text-lengths", default="", help="other T5 lengths to train at, e.g. 128,512")
    net.add_argument("--long-share", type=float, default=0.0, help="share of steps at one of those lengths")
    net.add_argument("--long-batch", type=int, default=8, help="pairs per long-text step")
    dist = parser.add_argument_group("guidance distillation (after the transformer, or from --teacher)")
    dist.add_argument("--teacher", type=pathlib.Path, default=None,
                      help="distil this trained CFG teacher (a transformer folder) and skip the transformer phase")
    dist.add_argument("--distill-minutes", type=float, default=0.0, help="time budget (0 with no steps: no phase)")
    dist.add_argument("--distill-steps", type=int, default=None, help="step limit")
    dist.add_argument("--distill-lr", type=float, default=2e-4, help="peak AdamW learning rate")
    dist.add_argument("--distill-guidance-range", type=float, nargs=2, default=(1.0, 6.0),
                      help="guidance values g drawn uniformly; the student learns the teacher's CFG at g")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval-pairs", type=int, default=40, help="held-out pairs per family (0: skip)")
    ev.add_argument("--eval-steps", type=int, default=28, help="sampling steps")
    ev.add_argument("--eval-guidance", type=float, default=2.5, help="guidance_scale for sampling")
    args = parser.parse_args(argv)
    toy_world.check_size(args.size)
    return args


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers such as 16,32,64,64; got {text!r}") from None


def _kind_weights(text: str) -> tuple:
    """'circle+square=3,circle+square+triangle=2' -> (('circle+square', 3.0), ('circle+square+triangle', 2.0))."""
    weights = []
    for item in filter(None, text.split(",")):
        kinds, _, factor = item.partition("=")
        try:
            weights.append((kinds.strip(), float(factor)))
        except ValueError:
            raise SystemExit(f"--kind-weights takes KINDS=FACTOR items, e.g. circle+square=3; got {item!r}") from None
    return tuple(weights)


def _budget(minutes: float | None) -> float | None:
    return minutes * 60 if minutes else None


def build_vae(args, device, log) -> tuple[AutoencoderKL, dict]:
    """Train (or load) the VAE, round it to the save precision, measure and store its shift and scale."""
    if args.vae is not None:
        vae = AutoencoderKL.from_pretrained(args.vae, dtype=torch.float32).to(device)
        history = []
        log(f"VAE loaded from {args.vae}")
    else:
        torch.manual_seed(args.seed)
        vae = AutoencoderKL(**vae_config(_ints(args.vae_channels), args.vae_layers)).to(device)
        log(f"VAE: {count_parameters(vae) / 1e6:.2f} M parameters")
        history = train_vae(vae, device=device, seed=args.seed, size=args.size, batch_size=args.vae_batch,
                            lr=args.vae_lr, kl_weight=args.kl_weight, steps=args.vae_steps,
                            seconds=_budget(args.vae_minutes), log=log, show=not args.quiet)
    round_weights(vae, DTYPES[args.save_dtype])
    probe = to_model_images(toy_world.random_images(np.random.default_rng([args.seed, 2]), 256, args.size), device)
    shift, scale = latent_statistics(vae, probe)
    vae.register_to_config(shift_factor=round(shift, 4), scaling_factor=round(scale, 4))
    psnr = vae_psnr(vae, probe)
    log(f"VAE: shift_factor {vae.config.shift_factor}, scaling_factor {vae.config.scaling_factor}, "
        f"round-trip PSNR {psnr:.2f} dB on 256 fresh pictures")
    return vae, {"history": history, "shift_factor": vae.config.shift_factor,
                 "scaling_factor": vae.config.scaling_factor, "psnr": round(psnr, 2)}


def run(args) -> dict:
    """The whole recipe; returns the training record (also written to OUT/training_record.json)."""
    started = time.perf_counter()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    avoid_failing_attention_backends(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = torch.bfloat16 if device.type == "cuda" else None
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "train_log.txt").open("w")

    def log(message: str) -> None:
        tqdm.write(message, file=sys.stdout)
        log_file.write(message + "\n")
        log_file.flush()

    log(f"device {device}, torch threads {torch.get_num_threads()}, seed {args.seed}")
    base = FluxKontextPipeline.from_pretrained(args.base, dtype=torch.float32, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    for encoder in (base.text_encoder, base.text_encoder_2):
        round_weights(encoder.to(device), DTYPES[args.save_dtype])

    vae, vae_record = build_vae(args, device, log)

    phase = time.perf_counter()
    pairs = toy_world.make_pairs("train", args.train_pairs, toy_world.BASE_FAMILIES, args.size, workers=args.workers,
                                 style=toy_world.STYLES[args.scene_style])
    long_lengths = _ints(args.long_text_lengths) if args.long_text_lengths else ()
    data = prepare_data(base, vae, pairs, args.text_length, device, long_lengths=long_lengths)
    log(f"{len(pairs)} training pairs encoded in {time.perf_counter() - phase:.0f}s: "
        f"{data.targets.shape[1]} target + {data.sources.shape[1]} context tokens, {data.prompt_embeds.shape[0]} "
        f"instructions of {data.prompt_embeds.shape[1]} T5 tokens; latent std {data.targets.std().item():.3f}")

    recipe = BatchRecipe(batch_size=args.batch,
                         family_weights=tuple(float(w) for w in args.family_weights.split(",")) if args.family_weights
                         else (), long_lengths=long_lengths, long_share=args.long_share, long_batch=args.long_batch,
                         prompt_dropout=args.prompt_dropout, edit_weight=args.edit_weight,
                         shape_weight=args.shape_weight, kind_weights=_kind_weights(args.kind_weights))
    continued_from = None
    if args.teacher:
        transformer = FluxTransformer2DModel.from_pretrained(args.teacher, dtype=torch.float32).to(device)
        earlier = args.teacher.parent / "training_record.json"
        continued_from = json.loads(earlier.read_text()) if earlier.is_file() else str(args.teacher)
        log(f"distilling the teacher {args.teacher}")
    elif args.transformer:  # continue an earlier run's (EMA) transformer
        transformer = FluxTransformer2DModel.from_pretrained(args.transformer, dtype=torch.float32).to(device)
        earlier = args.transformer.parent / "training_record.json"
        continued_from = json.loads(earlier.read_text()) if earlier.is_file() else str(args.transformer)
        log(f"continuing the transformer of {args.transformer}")
    else:
        torch.manual_seed(args.seed)
        config = transformer_config(heads=args.heads, head_dim=args.head_dim, double_blocks=args.double_blocks,
                                    single_blocks=args.single_blocks, rope_axes=_ints(args.rope_axes),
                                    text_dim=base.text_encoder_2.config.d_model,
                                    pooled_dim=base.text_encoder.config.hidden_size)
        transformer = FluxTransformer2DModel(**config).to(device)
    if args.add_single_blocks:
        if not args.transformer:
            raise SystemExit("--add-single-blocks deepens a trained transformer: give it with --transformer "
                             "(a new one is sized with --single-blocks)")
        transformer = add_single_blocks(transformer, args.add_single_blocks)
        log(f"appended {args.add_single_blocks} single block(s), each the identity at the start")
    log(f"transformer: {describe_transformer(transformer)}")
    history, distill_history, teacher = [], [], None
    if args.teacher:
        ema = transformer.eval()
    else:
        ema, history = train_transformer(
            transformer, data, device=device, seed=args.seed, batch_size=args.batch, lr=args.lr, warmup=args.warmup,
            ema_decay=args.ema_decay, guidance_range=tuple(args.guidance_range), logit_mean=args.logit_mean,
            logit_std=args.logit_std, steps=args.steps, seconds=_budget(args.minutes), autocast_dtype=autocast,
            recipe=recipe, grounding_weight=args.grounding_weight, perception_weight=args.perception_weight,
            perception_block=args.perception_block, log=log, show=not args.quiet)
    if args.distill_minutes or args.distill_steps:
        teacher = ema
        ema, distill_history = distill_guidance(
            teacher, copy.deepcopy(teacher), data, device=device, seed=args.seed, recipe=recipe, lr=args.distill_lr,
            ema_decay=args.ema_decay, guidance_range=tuple(args.distill_guidance_range), logit_mean=args.logit_mean,
            logit_std=args.logit_std, steps=args.distill_steps, seconds=_budget(args.distill_minutes),
            autocast_dtype=autocast, log=log, show=not args.quiet)

    pipe = FluxKontextPipeline(**{**base.components, "vae": vae, "transformer": ema})
    pipe.to(DTYPES[args.save_dtype]).save_pretrained(args.out, safe_serialization=True)
    if teacher is not None:
        teacher.to(DTYPES[args.save_dtype]).save_pretrained(args.out / TEACHER_FOLDER, safe_serialization=True)
    megabytes = sum(f.stat().st_size for f in args.out.rglob("*.safetensors")) / 1e6
    folder_megabytes = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    log(f"saved {args.out}: {megabytes:.1f} MB of weights in {args.save_dtype}, {folder_megabytes:.1f} MB in all")

    record = {"args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "vae": vae_record, "transformer_history": history, "distillation_history": distill_history,
              "text_lengths": [args.text_length, *long_lengths],
              "transformer_parameters": count_parameters(ema), "max_sequence_length": args.text_length,
              "weights_mb": round(megabytes, 2), "folder_mb": round(folder_megabytes, 2),
              "continued_from": continued_from}
    if args.eval_pairs:
        phase = time.perf_counter()
        saved = load_pipeline(args.out, device=str(device), dtype=torch.float32)
        heldout = toy_world.make_pairs("heldout", args.eval_pairs * len(toy_world.FAMILIES), tuple(toy_world.FAMILIES),
                                       args.size)
        evaluation = evaluate(saved, heldout, steps=args.eval_steps, guidance_scale=args.eval_guidance,
                              max_sequence_length=args.text_length, seed=args.seed)
        table = format_table(evaluation)
        log(f"held-out evaluation ({args.eval_steps} steps, guidance {args.eval_guidance}, "
            f"{time.perf_counter() - phase:.0f}s; {', '.join(toy_world.RESERVED_FAMILIES)} never trained on):\n{table}")
        record["evaluation"] = {which: [dataclasses.asdict(r) for r in getattr(evaluation, which)]
                                for which in ("model", "copy", "ceiling")}
    record["minutes"] = round((time.perf_counter() - started) / 60, 2)
    (args.out / "training_record.json").write_text(json.dumps(record, indent=1))
    log(f"done in {record['minutes']:.1f} min")
    log_file.close()
    return record


def main(argv=None) -> dict:
    silence_libraries()  # library warnings and their progress bars; the recipe prints its own
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
