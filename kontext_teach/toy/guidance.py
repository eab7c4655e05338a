"""Guidance in the miniature: a CFG teacher, its guidance-distilled student, and what the value does.

FLUX.1-dev (and so Kontext-dev) is *guidance-distilled*: Black Forest Labs trained a teacher that
supports classifier-free guidance, then a student that takes the guidance scale g as an input (an
embedding summed into the timestep vector) and reproduces the teacher's two-pass CFG output,
u + g (c - u), in one pass (Meng et al., *On Distillation of Guided Diffusion Models*, CVPR 2023).
The miniature is made the same way (``mini_training``: ``--prompt-dropout`` trains the teacher,
``--distill-minutes`` the student); the shipped folder holds the student as ``transformer/`` and the
teacher as ``teacher_transformer/``, so both can be compared.
"""

import pathlib

import numpy as np
import torch
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from PIL import Image

from ..packing import pack_latents
from ..position_ids import kontext_image_ids, text_ids, token_grid
from ..vae_latents import encode_image_latents
from . import edit_metric

TEACHER_FOLDER = "teacher_transformer"
TEACHER_GUIDANCE = 1.0  # the constant guidance input the teacher was trained with (it ignores the value)


def cfg_velocity(conditional: torch.Tensor, unconditional: torch.Tensor, scale) -> torch.Tensor:
    """Classifier-free guidance as the pipeline's true CFG computes it: u + g (c - u); g a number or [B]."""
    scale = torch.as_tensor(scale, dtype=conditional.dtype, device=conditional.device)
    if scale.ndim:
        scale = scale.view(-1, *([1] * (conditional.ndim - 1)))
    return unconditional + scale * (conditional - unconditional)


def has_teacher(folder: str | pathlib.Path) -> bool:
    return (pathlib.Path(folder) / TEACHER_FOLDER / "config.json").is_file()


def teacher_pipeline(pipe: FluxKontextPipeline, folder: str | pathlib.Path) -> FluxKontextPipeline:
    """The same pipeline with the CFG teacher of `folder` as its transformer (same dtype and device)."""
    folder = pathlib.Path(folder)
    if not has_teacher(folder):
        raise FileNotFoundError(f"{folder} has no {TEACHER_FOLDER}/: only miniatures trained with guidance "
                                "distillation ship their teacher (python -m kontext_teach mini-training --help)")
    teacher = FluxTransformer2DModel.from_pretrained(folder / TEACHER_FOLDER, dtype=pipe.transformer.dtype)
    result = FluxKontextPipeline(**{**pipe.components, "transformer": teacher.to(pipe.transformer.device)})
    result.set_progress_bar_config(disable=True)
    return result


def true_cfg_options(scale: float) -> dict:
    """Pipeline arguments for the teacher's two-pass CFG at `scale` (the empty prompt is the negative one)."""
    return {"true_cfg_scale": scale, "negative_prompt": ""}


def shape_saturation(image, pair) -> float:
    """Mean HSV saturation (0-1) of the pixels inside the target's shapes: rises when guidance overshoots."""
    masks = [edit_metric.interior(shape, pair.target_scene.size) for shape in pair.target_scene.shapes]
    if not masks:
        return float("nan")
    hsv = np.asarray(image.convert("HSV") if isinstance(image, Image.Image) else Image.fromarray(image).convert("HSV"))
    return float(hsv[..., 1][np.logical_or.reduce(masks)].mean() / 255.0)


def guidance_curve(pipe, pairs, scales, *, steps: int = 28, max_sequence_length: int = edit_metric.TEXT_LENGTH,
                   **options) -> list[dict]:
    """For each guidance value: edit accuracy, PSNR against the target and shape saturation over `pairs`."""
    rows = []
    for scale in scales:
        images = edit_metric.generate(pipe, pairs, steps=steps, guidance_scale=scale,
                                      max_sequence_length=max_sequence_length, **options)
        scores = [edit_metric.score_image(image, pair) for image, pair in zip(images, pairs)]
        rows.append({"guidance": float(scale),
                     "edit_accuracy": float(np.mean([s.edit_correct for s in scores])),
                     "psnr": float(np.mean([s.psnr for s in scores])),
                     "saturation": float(np.nanmean([shape_saturation(i, p) for i, p in zip(images, pairs)]))})
    return rows


@torch.no_grad()
def distillation_gap(student, teacher, tokens: dict, scale: float) -> dict:
    """How far the student's one-pass velocity at guidance `scale` is from the teacher's CFG at `scale`.

    tokens: hidden_states [B, Lt + Lc, 64] (noisy target then clean context), timestep [B], img_ids,
    txt_ids, prompt_embeds / pooled for the instruction and for "" (keys prompt, pooled, empty_prompt,
    empty_pooled), target_tokens Lt. Returns the student's error relative to the teacher's guided velocity,
    |s_g - cfg_g| / |cfg_g|, beside the size of what guidance changes, |cfg_g - c| / |cfg_g|: a student that
    ignored its guidance input would miss all of the latter.
    """
    size, target = tokens["hidden_states"].shape[0], tokens["target_tokens"]

    def run(model, prompt, pooled, guidance):
        return model(hidden_states=tokens["hidden_states"], timestep=tokens["timestep"],
                     guidance=torch.full((size,), guidance), pooled_projections=pooled,
                     encoder_hidden_states=prompt, txt_ids=tokens["txt_ids"], img_ids=tokens["img_ids"],
                     return_dict=False)[0][:, :target].float()

    conditional = run(teacher, tokens["prompt"], tokens["pooled"], TEACHER_GUIDANCE)
    unconditional = run(teacher, tokens["empty_prompt"], tokens["empty_pooled"], TEACHER_GUIDANCE)
    guided = cfg_velocity(conditional, unconditional, scale)
    one_pass = run(student, tokens["prompt"], tokens["pooled"], scale)
    return {"guidance": scale, "student_error": float((one_pass - guided).norm() / guided.norm()),
            "guidance_change": float((guided - conditional).norm() / guided.norm())}


@torch.no_grad()
def gap_inputs(pipe, pairs, sigma: float, *, max_sequence_length: int = edit_metric.TEXT_LENGTH,
               seed: int = 0) -> dict:
    """The inputs distillation_gap needs for toy `pairs` at noise level `sigma` (targets noised, sources clean)."""
    size = pairs[0].source.size[0]

    def latents(images):  # [B, Lt, 64] packed, shifted and scaled posterior modes
        pixels = pipe.image_processor.preprocess(images, size, size).to(pipe.vae.dtype)
        return pack_latents(encode_image_latents(pipe.vae, pixels))

    targets, sources = latents([p.target for p in pairs]), latents([p.source for p in pairs])
    noise = torch.randn(targets.shape, generator=torch.Generator().manual_seed(seed), dtype=targets.dtype)
    prompt, pooled, _ = pipe.encode_prompt(prompt=[p.instruction for p in pairs], prompt_2=None,
                                           max_sequence_length=max_sequence_length)
    empty, empty_pooled, _ = pipe.encode_prompt(prompt=[""] * len(pairs), prompt_2=None,
                                                max_sequence_length=max_sequence_length)
    grid = token_grid(size, size)
    return {"hidden_states": torch.cat([(1 - sigma) * targets + sigma * noise, sources], dim=1),
            "timestep": torch.full((len(pairs),), sigma), "img_ids": kontext_image_ids(grid, grid),
            "txt_ids": text_ids(prompt.shape[1]), "prompt": prompt, "pooled": pooled, "empty_prompt": empty,
            "empty_pooled": empty_pooled, "target_tokens": targets.shape[1]}
