"""Image preprocessing: which sizes FluxKontextPipeline uses, and the condition image's tensor.

``FluxKontextPipeline.__call__`` makes two size decisions that do not depend on each other:

* the condition image: floor its sides to multiples of 16, take the aspect ratio, snap to the
  closest of 17 preferred resolutions (``_auto_resize=True``), resize with LANCZOS (a stretch,
  never a crop), scale to [-1, 1]: a [B, 3, H, W] tensor for the VAE;
* the output image: ``height`` and ``width`` (default 1024 each) only give an aspect ratio; the
  area is rescaled to ``max_area`` (default 1024**2) and the sides floored to multiples of 16.
  The condition image plays no part, so the default output is 1024x1024 whatever you pass in.

16 = 8 (the VAE downsamples 8x) x 2 (the transformer packs 2x2 latent patches into one token).
Sizes are (width, height), as in PIL's ``image.size`` and in diffusers' resolution list; the
pipeline's keyword arguments are ``height=`` and ``width=``.
"""

from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from .position_ids import CONTEXT_INDEX, PATCH, TARGET_INDEX, VAE_SCALE_FACTOR, token_grid

# (width, height), all about one megapixel; the same list as diffusers' PREFERRED_KONTEXT_RESOLUTIONS
# (pipelines/flux/pipeline_flux_kontext.py) and BFL's PREFERED_KONTEXT_RESOLUTIONS (used by
# prepare_kontext in src/flux/sampling.py).
PREFERRED_KONTEXT_RESOLUTIONS = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024),
    (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688), (1568, 672),
)
MULTIPLE_OF = VAE_SCALE_FACTOR * PATCH  # 16 px per side of one transformer token
DEFAULT_SIDE = 1024  # pipeline.default_sample_size (128) * vae_scale_factor (8)
DEFAULT_MAX_AREA = 1024**2
WHITE = (255, 255, 255)


class Size(NamedTuple):
    """An image size in pixels, (width, height) like PIL's ``image.size``."""

    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    def tokens(self, multiple_of: int = MULTIPLE_OF) -> int:
        """Packed transformer tokens for an image of this size: (height / 16) * (width / 16)."""
        rows, cols = token_grid(self.height, self.width, vae_scale_factor=multiple_of // PATCH)
        return rows * cols

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _check_side(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a whole number of pixels, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} px, got {value}")
    return int(value)


def _as_size(image_size, multiple_of: int) -> Size:
    if isinstance(image_size, Image.Image):
        image_size = image_size.size
    if not (isinstance(image_size, tuple) and len(image_size) == 2):
        raise ValueError(f"image_size must be (width, height) like PIL's image.size, got {image_size!r}")
    width, height = (_check_side(n, v) for n, v in zip(("image width", "image height"), image_size))
    if width < multiple_of or height < multiple_of:
        raise ValueError(f"the image is {width}x{height} px; both sides must be at least {multiple_of} px. The "
                         f"pipeline floors sides to multiples of {multiple_of}: a height of 0 then divides by zero "
                         "(aspect = width / height), a width of 0 snaps to the tallest preferred resolution "
                         "whatever the image shows. Upscale it first, e.g. "
                         "image.resize((max(w, 64), max(h, 64)), Image.LANCZOS)")
    return Size(width, height)


def floor_to_multiple(value: int, multiple_of: int = MULTIPLE_OF) -> int:
    """The largest multiple of ``multiple_of`` not above ``value`` (the pipeline's ``x // m * m``)."""
    return value // multiple_of * multiple_of


def snap_to_preferred(size: Size, resolutions=PREFERRED_KONTEXT_RESOLUTIONS) -> Size:
    """The preferred resolution whose aspect ratio is closest to ``size``'s.

    Ties go to the smaller width, exactly as diffusers' ``min((abs(ar - w / h), w, h) ...)``.
    """
    _, width, height = min((abs(size.aspect - w / h), w, h) for w, h in resolutions)
    return Size(width, height)


def condition_size(image_size, auto_resize: bool = True, multiple_of: int = MULTIPLE_OF) -> Size:
    """The size the pipeline resizes the condition image to before the VAE.

    Floor both sides to ``multiple_of`` (``VaeImageProcessor.get_default_height_width``), then, with
    ``auto_resize``, snap to the closest preferred aspect ratio. Without ``auto_resize`` the image
    keeps its (floored) size, however large: a 4000x3000 photo becomes 46,875 context tokens.
    """
    floored = Size(*(floor_to_multiple(side, multiple_of) for side in _as_size(image_size, multiple_of)))
    chosen = snap_to_preferred(floored) if auto_resize else floored
    return Size(floor_to_multiple(chosen.width, multiple_of), floor_to_multiple(chosen.height, multiple_of))


def output_size(height: int | None = None, width: int | None = None, max_area: int = DEFAULT_MAX_AREA,
                multiple_of: int = MULTIPLE_OF) -> Size:
    """The size of the image the pipeline generates; the condition image plays no part.

    ``height``/``width`` default to 1024 and only set the aspect ratio r = width / height:
    width = round(sqrt(max_area * r)), height = round(sqrt(max_area / r)), both floored to 16.
    So the output has about ``max_area`` pixels whatever height and width say.
    """
    height = DEFAULT_SIDE if height is None else _check_side("height", height)
    width = DEFAULT_SIDE if width is None else _check_side("width", width)
    max_area = _check_side("max_area", max_area)
    aspect = width / height
    out_width = floor_to_multiple(round((max_area * aspect) ** 0.5), multiple_of)
    out_height = floor_to_multiple(round((max_area / aspect) ** 0.5), multiple_of)
    if out_width < multiple_of or out_height < multiple_of:
        raise ValueError(f"max_area={max_area} with aspect ratio {width}:{height} gives an output side under "
                         f"{multiple_of} px ({out_width}x{out_height}); raise max_area, e.g. max_area=height*width")
    return Size(out_width, out_height)


@dataclass(frozen=True)
class SizePlan:
    """What the pipeline will do with an image of ``image`` size and the given arguments."""

    image: Size
    condition: Size
    output: Size
    requested: Size  # (width, height) after the 1024 defaults, before the max_area rescale

    @property
    def stretch(self) -> float:
        """Condition aspect / image aspect: 1 = undistorted, > 1 = stretched wider (no crop)."""
        return self.condition.aspect / self.image.aspect

    @property
    def condition_tokens(self) -> int:
        return self.condition.tokens()

    @property
    def output_tokens(self) -> int:
        return self.output.tokens()

    def notes(self) -> list[str]:
        """The surprises in this plan, one sentence each."""
        notes = []
        if abs(self.stretch - 1) >= 0.005:
            notes.append(f"the condition image is stretched {100 * (self.stretch - 1):+.1f}% in width "
                         "(resized to another aspect ratio, not cropped)")
        if self.output != self.requested:
            notes.append(f"the requested {self.requested} became {self.output} (area rescaled to max_area, "
                         f"floored to {MULTIPLE_OF}); the pipeline only logs a warning")
        if abs(self.output.aspect / self.condition.aspect - 1) >= 0.02:
            notes.append(f"the output ({self.output.aspect:.2f}:1) does not follow the condition image's aspect "
                         f"({self.condition.aspect:.2f}:1); pass height/width and max_area=height*width")
        return notes

    def describe(self) -> str:
        lines = [f"input image      {self.image}  (aspect {self.image.aspect:.3f})",
                 f"condition image  {self.condition}  (aspect {self.condition.aspect:.3f}, "
                 f"{self.condition_tokens} tokens)",
                 f"output image     {self.output}  (aspect {self.output.aspect:.3f}, {self.output_tokens} tokens)"]
        return "\n".join(lines + [f"note: {note}" for note in self.notes()])


def plan_sizes(image_size, height: int | None = None, width: int | None = None, max_area: int = DEFAULT_MAX_AREA,
               auto_resize: bool = True, multiple_of: int = MULTIPLE_OF) -> SizePlan:
    """Predict the condition-image size and the output size of ``FluxKontextPipeline.__call__``.

    image_size: (width, height) of the input image (or the PIL image itself); the other arguments
    are the pipeline's (``auto_resize`` is its ``_auto_resize``). Where the pipeline would silently
    misbehave (a side of 0, ``height=0`` meaning 1024) this raises ValueError instead.
    """
    image = _as_size(image_size, multiple_of)
    requested = Size(DEFAULT_SIDE if width is None else width, DEFAULT_SIDE if height is None else height)
    return SizePlan(image=image,
                    condition=condition_size(image, auto_resize, multiple_of),
                    output=output_size(height, width, max_area, multiple_of),
                    requested=requested)


ROUNDING = ("error", "floor", "nearest")


def fit_to_multiple(width: int, height: int, multiple_of: int = MULTIPLE_OF, rounding: str = "error") -> Size:
    """(width, height) as multiples of ``multiple_of``, with an explicit policy instead of a warning.

    rounding: "error" (default) raises ValueError naming both fixes; "floor" rounds down; "nearest"
    rounds to the closest multiple (never below ``multiple_of``). Passed as ``height``/``width``, the
    pipeline floors only after rescaling the area to ``max_area`` (``output_size``), so "floor" is what
    it generates only with ``max_area=height*width``.
    """
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    width, height = _check_side("width", width, multiple_of), _check_side("height", height, multiple_of)
    floored = Size(floor_to_multiple(width, multiple_of), floor_to_multiple(height, multiple_of))
    nearest = Size(*(max(multiple_of, floor_to_multiple(side + multiple_of // 2, multiple_of))
                     for side in (width, height)))
    if rounding == "floor":
        return floored
    if rounding == "nearest":
        return nearest
    if (width, height) != floored:
        raise ValueError(f"{width}x{height} is not a multiple of {multiple_of} on both sides (the VAE downsamples "
                         f"{VAE_SCALE_FACTOR}x and the transformer packs {PATCH}x{PATCH} latent patches). Use "
                         f"{floored} (rounding='floor') or {nearest} (rounding='nearest'). Passed as height/width, "
                         f"the pipeline would make neither: it rescales the area to max_area first "
                         f"({output_size(height, width, multiple_of=multiple_of)} with the default 1024², floored), "
                         f"and floors to {floored} only with max_area=height*width")
    return Size(width, height)


# Image modes: RGB passes; these are converted by the stated policy; the rest is refused.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")  # composited over a background colour
PIL_CONVERTED_MODES = ("L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")  # PIL's convert("RGB")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # 0..65535 scaled to 0..255


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """An RGB copy of ``image``, by an explicit policy per mode (diffusers itself does no conversion).

    * transparency (RGBA, LA, PA, RGBa, or P/L/RGB with a transparent colour): composited over
      ``background`` (default white). PIL's ``convert("RGB")``, used by ``diffusers.utils.load_image``
      and BFL's code, drops alpha instead: transparent pixels show whatever colour they store.
    * L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX: PIL's ``convert("RGB")`` (CMYK without colour management).
    * 16-bit grayscale (I;16*): scaled 65535 -> 255 (PIL's own conversion would clip at 255).
    * anything else (I, F, ...): ValueError, because the value range is unknown.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image, got {type(image).__name__}; for an array use "
                         "PIL.Image.fromarray(array) (uint8, HxWx3), for a file PIL.Image.open(path)")
    if image.mode == "RGB" and "transparency" not in image.info:
        return image.copy()
    if has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in PIL_CONVERTED_MODES:
        return image.convert("RGB")
    if image.mode in SIXTEEN_BIT_MODES:
        eight_bit = np.round(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)  # [H, W]
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    raise ValueError(f"image mode {image.mode!r} is not supported: its value range is ambiguous or it has no RGB "
                     "meaning. Scale it to 0..255 and convert it yourself, e.g. "
                     "Image.fromarray(np.clip(np.asarray(img) / scale, 0, 255).astype('uint8')).convert('RGB')")


def check_image_mode(image: Image.Image, name: str = "image") -> None:
    """Raise a ValueError saying what to do unless ``image`` is RGB, the one mode FluxKontextPipeline
    handles (it converts nothing: RGBA, L or 16-bit images fail deep inside the VAE's first convolution)."""
    if image.mode != "RGB":
        raise ValueError(f"{name} has mode {image.mode}, but FluxKontextPipeline needs RGB (its VAE fails on other "
                         "channel counts). Convert it first: image.convert('RGB'), or "
                         "kontext_teach.preprocessing.to_rgb(image), which composites transparency on white and "
                         "scales 16-bit images correctly")


def resize_lanczos(image: Image.Image, size: Size) -> Image.Image:
    """Resize to exactly ``size`` with LANCZOS: no crop, no padding, so the aspect ratio may change."""
    return image.resize(tuple(size), resample=Image.Resampling.LANCZOS)


def pil_to_model_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> [B, 3, H, W] float32 in [-1, 1] (x / 255 * 2 - 1)."""
    arrays = [np.asarray(image, dtype=np.uint8) for image in images]  # B x [H, W, 3]
    batch = torch.from_numpy(np.stack(arrays)).float() / 255.0  # [B, H, W, 3] in [0, 1]
    batch = batch.permute(0, 3, 1, 2)  # [B, 3, H, W]
    return 2.0 * batch - 1.0  # [-1, 1]


def preprocess_condition_image(images, auto_resize: bool = True, multiple_of: int = MULTIPLE_OF,
                               background: tuple[int, int, int] = WHITE) -> torch.Tensor:
    """The condition image as the VAE receives it: [B, 3, H, W] in [-1, 1].

    Mode policy of ``to_rgb``, size of ``condition_size`` (taken from the first image, as the
    pipeline does for a list), LANCZOS resize, normalisation. For RGB images this equals what
    ``FluxKontextPipeline`` feeds its VAE.
    """
    images = images if isinstance(images, (list, tuple)) else [images]
    if not images:
        raise ValueError("no images given; pass a PIL image or a non-empty list of them")
    rgb = [to_rgb(image, background) for image in images]
    size = condition_size(rgb[0].size, auto_resize, multiple_of)
    return pil_to_model_tensor([resize_lanczos(image, size) for image in rgb])  # [B, 3, H, W]


@dataclass(frozen=True)
class ObservedSizes:
    """What a FluxKontextPipeline call really did, recorded with forward hooks."""

    condition: Size
    output: Size
    condition_tensor: torch.Tensor  # [B, 3, H, W]: the VAE encoder's input


class _Observed(Exception):
    """Raised by the transformer hook: everything is recorded, the denoising loop is not needed."""


def _grid_of(ids: torch.Tensor, first_index: int) -> tuple[int, int]:
    part = ids[ids[:, 0] == first_index]  # [rows * cols, 3]
    rows, cols = int(part[:, 1].max()) + 1, int(part[:, 2].max()) + 1
    if rows * cols != part.shape[0]:
        raise RuntimeError(f"the {part.shape[0]} ids with first coordinate {first_index} do not form a full grid")
    return rows, cols


@torch.no_grad()
def observe_pipeline_sizes(pipe, image, prompt: str = "", skip_vae_encode: bool = True, **call_kwargs) -> ObservedSizes:
    """Run ``pipe(image=image, prompt=prompt, **call_kwargs)`` up to its first transformer call, and record
    the condition tensor (input of ``pipe.vae.encoder``) and the output size (from the target
    tokens' position ids, one per 16x16 px patch).

    skip_vae_encode: after recording the condition tensor, hand the encoder a 16x16 stand-in with the
    same channels, so that a megapixel image is not encoded only to be thrown away (it changes nothing
    already recorded; a tensor with the wrong number of channels still fails as in the pipeline).
    """
    if image is None:
        raise ValueError("observe_pipeline_sizes needs an image: without one the pipeline makes no condition tensor")
    multiple_of = pipe.vae_scale_factor * PATCH
    record = {}

    def before_encoder(module, args):
        record["condition"] = args[0].detach().clone()  # [B, 3, H, W]
        if skip_vae_encode:
            batch, channels = args[0].shape[:2]
            return (args[0].new_zeros(batch, channels, multiple_of, multiple_of),)
        return None

    def before_transformer(module, args, kwargs):
        record["ids"] = kwargs["img_ids"].detach().clone()  # [L_target + L_context, 3]
        raise _Observed

    hooks = [pipe.vae.encoder.register_forward_pre_hook(before_encoder),
             pipe.transformer.register_forward_pre_hook(before_transformer, with_kwargs=True)]
    try:
        pipe(image=image, prompt=prompt, num_inference_steps=1, output_type="latent", **call_kwargs)
    except _Observed:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    if "ids" not in record or "condition" not in record:
        raise RuntimeError("the pipeline did not reach both the VAE encoder and the transformer; "
                           "was the image already a latent tensor?")
    rows, cols = _grid_of(record["ids"], TARGET_INDEX)
    condition = record["condition"]
    if skip_vae_encode:  # the context ids belong to the stand-in; the tensor has the true size
        cond_size = Size(condition.shape[3], condition.shape[2])
    else:
        cond_rows, cond_cols = _grid_of(record["ids"], CONTEXT_INDEX)
        cond_size = Size(cond_cols * multiple_of, cond_rows * multiple_of)
    return ObservedSizes(condition=cond_size, output=Size(cols * multiple_of, rows * multiple_of),
                         condition_tensor=condition)


def draw_preferred_resolutions(ax=None, resolutions=PREFERRED_KONTEXT_RESOLUTIONS):
    """The preferred resolutions as rectangles centred on one point, coloured by aspect ratio."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    colours = plt.cm.coolwarm(np.linspace(0, 1, len(resolutions)))
    for (width, height), colour in zip(resolutions, colours):
        ax.add_patch(Rectangle((-width / 2, -height / 2), width, height, fill=False, ec=colour, lw=1.4))
    for width, height in (resolutions[0], resolutions[len(resolutions) // 2], resolutions[-1]):
        ax.annotate(f"{width}x{height}", (width / 2, height / 2), xytext=(3, 3), textcoords="offset points",
                    fontsize=8)
    side = max(max(size) for size in resolutions) / 2 + 80
    ax.set_xlim(-side, side)
    ax.set_ylim(-side, side)
    ax.set_aspect("equal")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    return ax


def draw_plan(plan: SizePlan, ax=None, title: str | None = None):
    """Input (its shape, scaled to 1 MP), condition and output images as rectangles to one scale."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4))
    scale = (DEFAULT_MAX_AREA / plan.image.area) ** 0.5
    boxes = [(f"input {plan.image}\n(shape, drawn at 1 MP)", Size(plan.image.width * scale, plan.image.height * scale),
              "#bbbbbb"),
             (f"condition {plan.condition}\n{plan.condition_tokens} tokens", plan.condition, "#4c72b0"),
             (f"output {plan.output}\n{plan.output_tokens} tokens", plan.output, "#dd8452")]
    x, gap = 0.0, 150
    for label, size, colour in boxes:
        ax.add_patch(Rectangle((x, 0), size.width, size.height, fc=colour, alpha=0.35, ec=colour, lw=2))
        ax.text(x + size.width / 2, -60, label, ha="center", va="top", fontsize=8.5)
        x += size.width + gap
    tallest = max(size.height for _, size, _ in boxes)
    ax.set_xlim(-gap / 2, x - gap / 2)
    ax.set_ylim(-330, tallest + 60)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
