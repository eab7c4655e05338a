"""Did the edit happen? An automatic metric for the toy editing world, read off the scene descriptions.

Regions, all computed from the source and target scenes of a pair:

* each shape of the target scene must be there, in its colour (its interior, one pixel in from
  the anti-aliased edge);
* each place a shape left (removed, or moved by a mirror) must have become background;
* the rest of the picture, away from every shape, must still be background.

"Background" is the target scene's background: the light default, or the palette colour an edit
painted it (``toy_world.background_colour``).

Every pixel is classified as the nearest palette colour (or the background); a region is right
when at least ``min_fraction`` of its pixels have the expected colour. An edit is right when all
its regions are. Reported per edit family: edit accuracy, region accuracy, PSNR against the
target, next to two baselines: copying the source (what a model that ignores the instruction
gets) and the VAE round trip of the target (the ceiling: the transformer can do no better than
the decoder it writes through).
"""

from dataclasses import dataclass

import numpy as np
import torch

from .toy_world import BACKGROUND, BACKGROUND_RGB, PALETTE, EditPair, Scene, as_array, coverage

MIN_FRACTION = 0.75
TEXT_LENGTH = 24  # T5 tokens the miniature is trained and sampled with (the pipeline's default is 512)
COLOUR_NAMES = (*PALETTE, BACKGROUND)
COLOUR_TABLE = np.array([*PALETTE.values(), BACKGROUND_RGB], np.float32) / 255.0  # [7, 3]


@dataclass(frozen=True)
class Region:
    name: str  # e.g. "red circle", "where the blue square was", "background"
    mask: np.ndarray  # [H, W] bool
    colour: str  # the colour it must have: a PALETTE name or "background" (the light default)


@dataclass(frozen=True)
class RegionResult:
    name: str
    colour: str
    fraction: float  # share of the region's pixels with the expected colour
    correct: bool


@dataclass(frozen=True)
class ImageScore:
    regions: tuple[RegionResult, ...]
    psnr: float

    @property
    def edit_correct(self) -> bool:
        return all(r.correct for r in self.regions)

    @property
    def region_accuracy(self) -> float:
        return sum(r.correct for r in self.regions) / len(self.regions)


# --- masks ------------------------------------------------------------------------------

def erode(mask: np.ndarray, steps: int = 1, outside: bool = False) -> np.ndarray:
    """Shrink a boolean mask by `steps` pixels (3x3 neighbourhood); `outside` is the value beyond the border."""
    size_y, size_x = mask.shape
    for _ in range(steps):
        padded = np.pad(mask, 1, constant_values=outside)
        mask = np.logical_and.reduce([padded[dy:dy + size_y, dx:dx + size_x] for dy in range(3) for dx in range(3)])
    return mask


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """Grow a boolean mask by `steps` pixels (3x3 neighbourhood): the complement of the eroded complement."""
    return ~erode(~mask, steps, outside=True)


def interior(shape, size: int, margin: int = 1) -> np.ndarray:
    """[size, size] bool: pixels fully inside the shape, `margin` pixels in from its edge."""
    return erode(coverage(shape, size) >= 1.0, margin)


def footprint(scene: Scene, margin: int = 1) -> np.ndarray:
    """[size, size] bool: pixels any shape touches, grown by `margin` pixels."""
    touched = np.zeros((scene.size, scene.size), bool)
    for shape in scene.shapes:
        touched |= coverage(shape, scene.size) > 0
    return dilate(touched, margin)


def regions(source: Scene, target: Scene, margin: int = 1) -> list[Region]:
    """The regions to check for an edit from `source` to `target` (see the module docstring)."""
    if source.size != target.size:
        raise ValueError(f"source and target scenes differ in size ({source.size} vs {target.size}); "
                         "an edit keeps the picture size")
    size = target.size
    found = [Region(shape.name, interior(shape, size, margin), shape.colour) for shape in target.shapes]
    target_touch = footprint(target, margin)
    for shape in source.shapes:
        vacated = interior(shape, size, margin) & ~target_touch
        if vacated.any():
            found.append(Region(f"where the {shape.name} was", vacated, target.background))
    rest = ~(footprint(source, 2 * margin) | footprint(target, 2 * margin))
    found.append(Region(BACKGROUND, rest, target.background))
    return [region for region in found if region.mask.any()]


# --- scoring ----------------------------------------------------------------------------

def classify_colours(image) -> np.ndarray:
    """[H, W] indices into COLOUR_NAMES: the nearest palette colour (or background) of each pixel."""
    pixels = as_array(image)  # [H, W, 3] in [0, 1]
    distances = ((pixels[:, :, None, :] - COLOUR_TABLE) ** 2).sum(-1)  # [H, W, 7]
    return distances.argmin(-1)


def psnr(image, target) -> float:
    """Peak signal-to-noise ratio in dB, pixels in [0, 1]: 10 log10(1 / MSE); capped at 100 for identical images."""
    a, b = as_array(image), as_array(target)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and target {b.shape} differ in shape; generate at the target's size "
                         "(height=width=pair.target.size[0], max_area=height * width, _auto_resize=False)")
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else float(10 * np.log10(1.0 / mse))


def score_image(image, pair: EditPair, min_fraction: float = MIN_FRACTION) -> ImageScore:
    """Check every region of the pair in `image` (PIL or [H, W, 3] array) and measure its PSNR against the target."""
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must lie in (0, 1] (the share of a region's pixels that must have the "
                         f"right colour); got {min_fraction}")
    labels = classify_colours(image)
    if labels.shape != (pair.target_scene.size,) * 2:
        raise ValueError(f"image is {labels.shape[1]}x{labels.shape[0]} but the pair is {pair.target_scene.size} px; "
                         "generate with height=width=size, max_area=size*size, _auto_resize=False")
    results = []
    for region in regions(pair.source_scene, pair.target_scene):
        fraction = float((labels[region.mask] == COLOUR_NAMES.index(region.colour)).mean())
        results.append(RegionResult(region.name, region.colour, round(fraction, 6), fraction >= min_fraction))
    return ImageScore(tuple(results), psnr(image, pair.target))


# --- evaluation over many pairs ----------------------------------------------------------

@dataclass(frozen=True)
class FamilyRow:
    family: str
    count: int
    edit_accuracy: float
    region_accuracy: float
    psnr: float


def summarise(scores: list[ImageScore], families: list[str]) -> list[FamilyRow]:
    """One row per family (in order of first appearance), then 'overall'."""
    if len(scores) != len(families) or not scores:
        raise ValueError(f"need one family name per score and at least one score; got {len(scores)} scores, "
                         f"{len(families)} families")
    rows = []
    for family in list(dict.fromkeys(families)) + ["overall"]:
        chosen = [s for s, f in zip(scores, families) if family in (f, "overall")]
        rows.append(FamilyRow(family, len(chosen), float(np.mean([s.edit_correct for s in chosen])),
                              float(np.mean([s.region_accuracy for s in chosen])),
                              float(np.mean([s.psnr for s in chosen]))))
    return rows


def accuracy_interval(accuracy: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for z = 1.96) of an edit accuracy measured on `count` pairs: (low, high).

    With 64 pairs an accuracy of 0.8 could as well be 0.69 or 0.88; compare two accuracies only
    when their intervals are apart."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be the positive number of pairs the accuracy was measured on, got {count!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1] (a share of pairs), got {accuracy}")
    denominator = 1 + z * z / count
    centre = (accuracy + z * z / (2 * count)) / denominator
    half = z * np.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count)) / denominator
    # the interval holds the accuracy itself; min / max only undo rounding at 0 and 1
    return float(max(0.0, min(centre - half, accuracy))), float(min(1.0, max(centre + half, accuracy)))


@dataclass(frozen=True)
class Evaluation:
    model: list[FamilyRow]
    copy: list[FamilyRow]  # the source image as the answer
    ceiling: list[FamilyRow]  # the VAE round trip of the target
    images: list  # the model's PIL images, one per pair

    def row(self, which: str, family: str = "overall") -> FamilyRow:
        return next(r for r in getattr(self, which) if r.family == family)


def format_table(evaluation: Evaluation) -> str:
    """A text table: per family, the model's edit / region accuracy and PSNR, then copy and VAE ceiling."""
    header = (f"{'family':<18}{'n':>4} | {'edit':>5} {'region':>6} {'PSNR':>6} | "
              f"{'copy edit':>9} {'PSNR':>6} | {'VAE edit':>8} {'PSNR':>6}")
    lines = [header, "-" * len(header)]
    for model, copy, ceiling in zip(evaluation.model, evaluation.copy, evaluation.ceiling):
        lines.append(f"{model.family:<18}{model.count:>4} | {model.edit_accuracy:5.2f} {model.region_accuracy:6.2f} "
                     f"{model.psnr:6.2f} | {copy.edit_accuracy:9.2f} {copy.psnr:6.2f} | "
                     f"{ceiling.edit_accuracy:8.2f} {ceiling.psnr:6.2f}")
    return "\n".join(lines)


@torch.no_grad()
def vae_round_trip(pipe, images: list) -> list:
    """Encode and decode PIL images with the pipeline's VAE as Kontext does (mode, shift and scale): PIL images."""
    size = images[0].size
    pixels = pipe.image_processor.preprocess(images, size[1], size[0])  # [B, 3, H, W] in [-1, 1]
    pixels = pixels.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    config = pipe.vae.config
    latents = (pipe.vae.encode(pixels).latent_dist.mode() - config.shift_factor) * config.scaling_factor
    decoded = pipe.vae.decode(latents / config.scaling_factor + config.shift_factor).sample
    return pipe.image_processor.postprocess(decoded, output_type="pil")


def generate(pipe, pairs: list[EditPair], *, steps: int = 28, guidance_scale: float = 2.5,
             max_sequence_length: int = TEXT_LENGTH, batch_size: int = 16, seed: int = 0, **options) -> list:
    """The pipeline's edit of every pair's source (PIL images), in batches, at the pairs' own size.

    `options` go to the pipeline as they are (e.g. true_cfg_scale=3.0, negative_prompt="" for true CFG)."""
    size = pairs[0].source.size[0]
    outputs = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        batch_options = dict(options)
        if isinstance(options.get("negative_prompt"), str):  # one negative prompt for every pair of this batch
            batch_options["negative_prompt"] = [options["negative_prompt"]] * len(batch)
        result = pipe(image=[p.source for p in batch], prompt=[p.instruction for p in batch],
                      height=size, width=size, max_area=size * size, _auto_resize=False,
                      num_inference_steps=steps, guidance_scale=guidance_scale,
                      max_sequence_length=max_sequence_length,
                      generator=torch.Generator("cpu").manual_seed(seed + start), **batch_options)
        outputs.extend(result.images)
    return outputs


def evaluate(pipe, pairs: list[EditPair], *, steps: int = 28, guidance_scale: float = 2.5,
             max_sequence_length: int = TEXT_LENGTH, batch_size: int = 16, seed: int = 0,
             min_fraction: float = MIN_FRACTION) -> Evaluation:
    """Edit every pair with the pipeline and score it, with the copy baseline and the VAE ceiling.

    max_sequence_length must be the T5 length the model was trained with (TEXT_LENGTH for the
    miniature; the pipeline's default, 512, would change what T5 and the transformer see).
    """
    if not pairs:
        raise ValueError("give at least one pair, e.g. toy_world.make_pairs('heldout', 40)")
    sizes = {p.source.size for p in pairs}
    if len(sizes) != 1:
        raise ValueError(f"all pairs must have one image size (got {sorted(sizes)}); evaluate each size separately")
    families = [p.family for p in pairs]
    images = generate(pipe, pairs, steps=steps, guidance_scale=guidance_scale,
                      max_sequence_length=max_sequence_length, batch_size=batch_size, seed=seed)
    ceilings = []
    for start in range(0, len(pairs), batch_size):
        ceilings.extend(vae_round_trip(pipe, [p.target for p in pairs[start:start + batch_size]]))

    def rows(answers):
        return summarise([score_image(a, p, min_fraction) for a, p in zip(answers, pairs)], families)

    return Evaluation(rows(images), rows([p.source for p in pairs]), rows(ceilings), images)
