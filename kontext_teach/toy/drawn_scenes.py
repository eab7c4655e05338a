"""A second renderer: toy scenes drawn with PIL's ImageDraw, to check that the miniature learned the
edits and not the quirks of ``toy_world``'s renderer.

Nothing here comes from ``toy_world``'s scene sampler or renderer; only the vocabulary is shared (the
shape kinds, the palette names and the instruction phrasings, which are all the miniature's T5 knows).
The scenes go where the training generator never goes:

* shapes of sizes outside the training range, anywhere in the picture (also touching the border);
* two shapes of the *same* colour, so that only the shape word tells which one to edit;
* shapes close to each other (a gap of 1-3 px instead of the generator's 4 or more);
* colours and background jittered in shade (a "red" that is not the palette's red).

Each shape is drawn 4x larger with ImageDraw and box-filtered down (PIL's own anti-aliasing, not the
generator's coverage sampling). The masks drawn the same way give the regions to check, scored as
``edit_metric`` scores toy-world pairs: each region right when at least 75 % of its pixels have the
nearest palette colour it should have.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from . import toy_world
from .edit_metric import BACKGROUND, COLOUR_NAMES, MIN_FRACTION, Region, classify_colours, dilate, erode, psnr

SCALE = 4  # draw 4x larger, then box-filter down
RADIUS_RANGE = (0.08, 0.22)  # fraction of the side; toy_world draws 0.11-0.17
SHADE_JITTER = 20  # +- per RGB channel around the palette colour
SAME_COLOUR_SHARE = 0.4  # share of scenes whose first two shapes share a colour
FAMILIES = ("recolour_one", "recolour_all", "remove", "mirror")  # the base model's edits
LORA_FAMILIES = ("flip_upside_down",)  # notebook 09's shipped LoRA edit (seeds apart from the base ones)
SEED_OFFSET = 7_000_000  # seeds of this renderer; far from both toy_world splits


@dataclass(frozen=True)
class DrawnShape:
    kind: str  # circle, square or triangle
    colour: str  # palette name (what the metric checks)
    rgb: tuple[int, int, int]  # the shade actually drawn
    x: float  # centre, pixels
    y: float
    radius: float  # circle radius, half side of the square, apex distance of the triangle
    upside_down: bool = False  # triangles only: apex at the bottom


@dataclass(frozen=True)
class DrawnScene:
    size: int
    background: tuple[int, int, int]
    shapes: tuple[DrawnShape, ...]


@dataclass(frozen=True)
class DrawnPair:
    """Duck-types toy_world.EditPair where the pipeline helpers need it (source, target, instruction, family)."""

    seed: int
    family: str
    instruction: str
    source: Image.Image
    target: Image.Image
    source_scene: DrawnScene
    target_scene: DrawnScene


# --- drawing ----------------------------------------------------------------------------

def outline(shape: DrawnShape, scale: int = SCALE) -> tuple[str, list]:
    """(ImageDraw method, its coordinates) for the shape on a canvas `scale` times larger."""
    x, y, r = shape.x * scale, shape.y * scale, shape.radius * scale
    if shape.kind == "circle":
        return "ellipse", [x - r, y - r, x + r, y + r]
    if shape.kind == "square":
        return "rectangle", [x - r, y - r, x + r, y + r]
    if shape.kind == "triangle":  # apex up and base below the centre, or the other way round
        turn = -1 if shape.upside_down else 1
        return "polygon", [(x, y - turn * r), (x - 1.1 * r, y + turn * 0.8 * r), (x + 1.1 * r, y + turn * 0.8 * r)]
    raise ValueError(f"unknown shape kind {shape.kind!r}; use one of {toy_world.KINDS}")


def coverage(shape: DrawnShape, size: int) -> np.ndarray:
    """[size, size] float in [0, 1]: how much of each pixel the shape covers (drawn large, box-filtered)."""
    mask = Image.new("L", (size * SCALE,) * 2, 0)
    method, coords = outline(shape)
    getattr(ImageDraw.Draw(mask), method)(coords, fill=255)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0


def draw(scene: DrawnScene) -> Image.Image:
    """The scene as an RGB image: each shape blended over the background by its coverage."""
    image = np.broadcast_to(np.array(scene.background, np.float32), (scene.size, scene.size, 3)).copy()
    for shape in scene.shapes:
        alpha = coverage(shape, scene.size)[..., None]  # [size, size, 1]
        image = (1 - alpha) * image + alpha * np.array(shape.rgb, np.float32)
    return Image.fromarray(np.round(image).astype(np.uint8), "RGB")


# --- scenes -----------------------------------------------------------------------------

def shade(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = np.array(toy_world.PALETTE[colour])
    return tuple(int(v) for v in np.clip(base + rng.integers(-SHADE_JITTER, SHADE_JITTER + 1, 3), 0, 255))


def bounding_radius(shape: DrawnShape) -> float:
    return shape.radius * (1.42 if shape.kind == "square" else 1.36 if shape.kind == "triangle" else 1.0)


def random_drawn_scene(rng: np.random.Generator, size: int = toy_world.IMAGE_SIZE) -> DrawnScene:
    """Two or three shapes of different kinds, sizes and places unlike the training generator's."""
    count = int(rng.integers(2, 4))
    kinds = rng.permutation(toy_world.KINDS)[:count]
    colours = list(rng.permutation(list(toy_world.PALETTE))[:count])
    if rng.random() < SAME_COLOUR_SHARE:
        colours[1] = colours[0]
    gap = float(rng.uniform(1.0, 3.0))
    background = tuple(int(v) for v in np.clip(np.array(toy_world.BACKGROUND_RGB) + rng.integers(-6, 7, 3), 0, 255))
    for _ in range(toy_world.MAX_ATTEMPTS):
        shapes = []
        for kind, colour in zip(kinds, colours):
            radius = float(rng.uniform(*RADIUS_RANGE)) * size
            reach = radius * 1.1 if kind != "circle" else radius  # may touch the border, never leave it
            x, y = rng.uniform(reach, size - reach, 2)
            shapes.append(DrawnShape(str(kind), str(colour), shade(rng, str(colour)), float(x), float(y), radius))
        if all(np.hypot(a.x - b.x, a.y - b.y) >= bounding_radius(a) + bounding_radius(b) + gap
               for i, a in enumerate(shapes) for b in shapes[i + 1:]):
            return DrawnScene(size, background, tuple(shapes))
    raise RuntimeError("could not place the shapes; this should not happen")


def edit_scene(scene: DrawnScene, family: str, rng: np.random.Generator):
    """(target scene, words for the phrasing), or None when the edit would not change the picture."""
    shapes = list(scene.shapes)
    if family == "recolour_one":
        index = int(rng.integers(len(shapes)))
        colour = str(rng.choice([c for c in toy_world.PALETTE if c != shapes[index].colour]))
        shapes[index] = dataclasses.replace(shapes[index], colour=colour, rgb=toy_world.PALETTE[colour])
        return dataclasses.replace(scene, shapes=tuple(shapes)), {"shape": scene.shapes[index].kind, "colour": colour}
    if family == "recolour_all":
        colour = str(rng.choice(list(toy_world.PALETTE)))
        if all(s.colour == colour for s in shapes):
            return None
        return (dataclasses.replace(scene, shapes=tuple(dataclasses.replace(s, colour=colour,
                                                                            rgb=toy_world.PALETTE[colour])
                                                        for s in shapes)), {"colour": colour})
    if family == "remove":
        index = int(rng.integers(len(shapes)))
        gone = shapes.pop(index)
        return dataclasses.replace(scene, shapes=tuple(shapes)), {"shape": gone.kind, "colour": gone.colour}
    if family == "mirror":
        if not any(abs(scene.size - 2 * s.x) >= 2 * bounding_radius(s) for s in shapes):
            return None
        return dataclasses.replace(scene, shapes=tuple(dataclasses.replace(s, x=scene.size - s.x)
                                                       for s in shapes)), {}
    if family == "flip_upside_down":
        if not any(abs(scene.size - 2 * s.y) >= 2 * bounding_radius(s) for s in shapes):
            return None
        return dataclasses.replace(scene, shapes=tuple(
            dataclasses.replace(s, y=scene.size - s.y, upside_down=(s.kind == "triangle") != s.upside_down)
            for s in shapes)), {}
    raise ValueError(f"the drawn scenes cover {FAMILIES + LORA_FAMILIES}; got {family!r}")


def make_drawn_pair(seed: int, family: str, size: int = toy_world.IMAGE_SIZE) -> DrawnPair:
    """The pair of one seed and one family (deterministic)."""
    if family not in FAMILIES + LORA_FAMILIES:
        raise ValueError(f"the drawn scenes cover {FAMILIES + LORA_FAMILIES}; got {family!r}")
    rng = np.random.default_rng([SEED_OFFSET + seed, (FAMILIES + LORA_FAMILIES).index(family), size])
    for _ in range(toy_world.MAX_ATTEMPTS):
        source = random_drawn_scene(rng, size)
        result = edit_scene(source, family, rng)
        if result is not None:
            break
    target, words = result
    templates = toy_world.FAMILIES[family][1]
    instruction = templates[int(rng.integers(len(templates)))].format(**words)
    return DrawnPair(seed, family, instruction, draw(source), draw(target), source, target)


def make_drawn_pairs(count_per_family: int, families=FAMILIES, size: int = toy_world.IMAGE_SIZE) -> list[DrawnPair]:
    """count_per_family pairs of each family, families taking turns."""
    return [make_drawn_pair(i, family, size) for i in range(count_per_family) for family in families]


# --- scoring ----------------------------------------------------------------------------

def interior(shape: DrawnShape, size: int, margin: int = 1) -> np.ndarray:
    return erode(coverage(shape, size) >= 0.999, margin)


def footprint(scene: DrawnScene, margin: int = 1) -> np.ndarray:
    touched = np.zeros((scene.size, scene.size), bool)
    for shape in scene.shapes:
        touched |= coverage(shape, scene.size) > 0
    return dilate(touched, margin)


def drawn_regions(source: DrawnScene, target: DrawnScene, margin: int = 1) -> list[Region]:
    """The regions edit_metric checks, from the drawn masks: shapes in their colour, vacated places and
    the untouched rest as background."""
    size = target.size
    found = [Region(f"{s.colour} {s.kind}", interior(s, size, margin), s.colour) for s in target.shapes]
    target_touch = footprint(target, margin)
    for shape in source.shapes:
        vacated = interior(shape, size, margin) & ~target_touch
        if vacated.any():
            found.append(Region(f"where the {shape.colour} {shape.kind} was", vacated, BACKGROUND))
    rest = ~(footprint(source, 2 * margin) | footprint(target, 2 * margin))
    found.append(Region(BACKGROUND, rest, BACKGROUND))
    return [region for region in found if region.mask.any()]


def edit_correct(image, pair: DrawnPair, min_fraction: float = MIN_FRACTION) -> bool:
    """True when every region of the pair has its expected colour in `image`."""
    labels = classify_colours(image)
    return all(float((labels[r.mask] == COLOUR_NAMES.index(r.colour)).mean()) >= min_fraction
               for r in drawn_regions(pair.source_scene, pair.target_scene))


def score_drawn(images: list, pairs: list[DrawnPair]) -> dict[str, dict]:
    """{family: {"count", "edit_accuracy", "psnr"}} and "overall", for the pipeline's images of `pairs`."""
    rows = {}
    for family in [*dict.fromkeys(p.family for p in pairs), "overall"]:
        chosen = [(i, p) for i, p in zip(images, pairs) if family in (p.family, "overall")]
        rows[family] = {"count": len(chosen),
                        "edit_accuracy": float(np.mean([edit_correct(i, p) for i, p in chosen])),
                        "psnr": float(np.mean([psnr(i, p.target) for i, p in chosen]))}
    return rows
