"""The toy editing world: seed -> (source image, instruction, target image, scene descriptions).

A plain light background with two or three simple shapes (circle, square, triangle, each kind
at most once, each in its own colour), drawn anti-aliased. An *edit family* changes the scene
(recolour one shape, recolour everything, remove a shape, mirror left to right, ...); each
family has several phrasings, all made of words the miniature's T5 tokenizer was trained on
(``prompt_corpus.py``). Everything is deterministic: the same seed and family always give the
same pair, on every machine.

The base miniature trains on ``BASE_FAMILIES``; ``RESERVED_FAMILIES`` (flip upside down, the
background colour, keep one shape, swap two colours, a new colour word) are kept for the LoRA
notebook, so the base model never sees them. Training pairs use seeds from
``TRAIN_SEEDS``, evaluation pairs from ``HELDOUT_SEEDS``: the two ranges never overlap.

Geometry: continuous pixel coordinates, pixel (row i, column j) covers [j, j+1] x [i, i+1].
Mirroring maps x -> width - x, flipping maps y -> height - y, so the renderer draws a
mirrored scene exactly as the mirrored picture.
"""

import concurrent.futures
import dataclasses
import itertools
import multiprocessing
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Saturated colours, far apart in RGB, all single pieces of the T5 tokenizer.
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (250, 130, 20),
}
BACKGROUND = "background"
BACKGROUND_RGB = (240, 240, 235)
KINDS = ("circle", "square", "triangle")

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # 4 x 4 samples per pixel: coverage in steps of 1/16 gives the anti-aliased edges
RADIUS_RANGE = (0.11, 0.17)  # shape "radius" as a fraction of the image side
BOUND = 1.15  # every shape fits in a disc of BOUND * radius around its centre
GAP = 0.06  # minimum free space between two shapes' bounding discs, fraction of the side
MAX_ATTEMPTS = 1000

TRAIN_SEEDS = range(0, 1_000_000)
HELDOUT_SEEDS = range(1_000_000, 2_000_000)
SPLITS = {"train": TRAIN_SEEDS, "heldout": HELDOUT_SEEDS}


@dataclass(frozen=True)
class Shape:
    kind: str  # one of KINDS
    colour: str  # a PALETTE name
    x: float  # centre, pixels from the left edge
    y: float  # centre, pixels from the top edge
    radius: float  # circle radius; half side / 0.85 for squares; apex distance for triangles
    upside_down: bool = False  # triangles only: apex at the bottom
    shade: tuple[int, int, int] | None = None  # the RGB drawn, when not exactly PALETTE[colour] (SceneStyle)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return self.shade or PALETTE[self.colour]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """What is in a picture: its size and its shapes, on a background (the plain light one unless an edit painted it)."""

    size: int
    shapes: tuple[Shape, ...]
    background: str = BACKGROUND  # BACKGROUND (the light default) or a PALETTE name

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return BACKGROUND_RGB if self.background == BACKGROUND else PALETTE[self.background]


@dataclass(frozen=True)
class EditPair:
    """One training or evaluation example."""

    seed: int
    family: str
    instruction: str
    source: Image.Image  # RGB, size x size
    target: Image.Image
    source_scene: Scene
    target_scene: Scene


# --- rendering --------------------------------------------------------------------------

def sample_points(start: int, stop: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coordinates of the supersample points of pixels start..stop-1 along one axis: [(stop - start) * s].

    Point k sits at (k + 0.5) / s, so the set of points is symmetric under x -> size - x.
    """
    return (np.arange(start * supersample, stop * supersample) + 0.5) / supersample


def triangle_vertices(shape: Shape) -> np.ndarray:
    """[3, 2] (x, y) corners of an isosceles triangle, apex up (or down when upside_down)."""
    sign = 1.0 if shape.upside_down else -1.0  # image y grows downwards
    r = shape.radius
    return np.array([[shape.x, shape.y + sign * r],
                      [shape.x - 1.1 * r, shape.y - sign * 0.8 * r],
                      [shape.x + 1.1 * r, shape.y - sign * 0.8 * r]])


def inside(shape: Shape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean array: which points (x, y) lie inside the shape."""
    dx, dy = x - shape.x, y - shape.y
    if shape.kind == "circle":
        return dx ** 2 + dy ** 2 <= shape.radius ** 2
    if shape.kind == "square":
        half = 0.85 * shape.radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape.kind == "triangle":
        corners = triangle_vertices(shape)
        signs = []
        for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):
            signs.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))  # which side of each edge
        signs = np.stack(signs)
        return (signs >= 0).all(axis=0) | (signs <= 0).all(axis=0)
    raise ValueError(f"unknown shape kind {shape.kind!r}; use one of {KINDS}")


def pixel_box(shape: Shape, size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds of the shape's bounding disc, clipped to the image."""
    reach = BOUND * shape.radius + 1
    return (max(0, int(np.floor(shape.y - reach))), min(size, int(np.ceil(shape.y + reach))),
            max(0, int(np.floor(shape.x - reach))), min(size, int(np.ceil(shape.x + reach))))


def coverage(shape: Shape, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """[size, size] fraction of each pixel the shape covers, in steps of 1 / supersample^2."""
    top, bottom, left, right = pixel_box(shape, size)
    x, y = np.meshgrid(sample_points(left, right, supersample), sample_points(top, bottom, supersample))
    hits = inside(shape, x, y).astype(np.float32)  # [rows * s, cols * s], only around the shape
    result = np.zeros((size, size), np.float32)
    blocks = hits.reshape(bottom - top, supersample, right - left, supersample)  # one s x s block per pixel
    result[top:bottom, left:right] = blocks.mean(axis=(1, 3))
    return result  # [size, size]


def render_array(scene: Scene, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """[size, size, 3] float32 RGB in [0, 255]: each shape blended over the scene's background by its coverage."""
    image = np.broadcast_to(np.array(scene.background_rgb, np.float32), (scene.size, scene.size, 3)).copy()
    for shape in scene.shapes:
        alpha = coverage(shape, scene.size, supersample)[..., None]  # [size, size, 1]
        image = (1 - alpha) * image + alpha * np.array(shape.rgb, np.float32)
    return image


def render(scene: Scene, supersample: int = SUPERSAMPLE) -> Image.Image:
    """The scene as an RGB PIL image (what the pipeline takes)."""
    return Image.fromarray(np.round(render_array(scene, supersample)).astype(np.uint8), "RGB")


# --- scenes -----------------------------------------------------------------------------

def check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 16:
        raise ValueError(f"image size must be a multiple of 16 (8 for the VAE x 2 for packing) and at "
                         f"least 32 px so that the shapes fit; got {size!r}")


@dataclass(frozen=True)
class SceneStyle:
    """How scenes are sampled. The default is the world every evaluation and picture uses; a wider style
    (WIDE_STYLE) is a training augmentation: more sizes, closer shapes, shapes cut by the border, two
    shapes of one colour, shades around the palette colours."""

    radius_range: tuple[float, float] = RADIUS_RANGE  # fractions of the side
    gap: float = GAP  # minimum free space between two shapes' bounding discs, fraction of the side
    inside: float = 1.0  # share of each bounding disc's radius that must lie inside the picture
    same_colour_share: float = 0.0  # share of scenes whose first two shapes have the same colour
    shade_jitter: int = 0  # each shape drawn up to this far (per RGB channel) from its palette colour

    def __post_init__(self):
        check_radius_range(self.radius_range)
        if not (0 <= self.gap <= 0.2 and 0.5 <= self.inside <= 1 and 0 <= self.same_colour_share <= 1
                and 0 <= self.shade_jitter <= 30):
            raise ValueError(f"a scene style needs 0 <= gap <= 0.2, 0.5 <= inside <= 1, 0 <= same_colour_share "
                             f"<= 1 and 0 <= shade_jitter <= 30 (the metric reads the nearest palette colour); "
                             f"got {self}")


def random_scene(rng: np.random.Generator, size: int = IMAGE_SIZE, radius_range=RADIUS_RANGE,
                 style: SceneStyle | None = None) -> Scene:
    """Two or three shapes of different kinds and different colours, not touching each other
    (radii drawn from `radius_range`, fractions of the side). A `style` replaces these rules (and the
    radius range) with its own; the default style draws exactly the scenes of the default rules."""
    check_size(size)
    style = style or SceneStyle(radius_range=tuple(radius_range))
    count = int(rng.integers(2, 4))
    kinds = rng.permutation(KINDS)[:count]
    colours = rng.permutation(list(PALETTE))[:count]
    if style.same_colour_share and rng.random() < style.same_colour_share:
        colours[1] = colours[0]
    for _ in range(MAX_ATTEMPTS):
        shapes = []
        for kind, colour in zip(kinds, colours):
            radius = float(rng.uniform(*style.radius_range)) * size
            margin = style.inside * BOUND * radius + 1
            x, y = rng.uniform(margin, size - margin, 2)
            shapes.append(Shape(str(kind), str(colour), float(x), float(y), radius))
        if not any(_too_close(a, b, size, style.gap) for i, a in enumerate(shapes) for b in shapes[i + 1:]):
            return Scene(size, tuple(_shaded(shape, rng, style.shade_jitter) for shape in shapes))
    raise RuntimeError("could not place the shapes without overlap; this should not happen")


def _shaded(shape: Shape, rng: np.random.Generator, jitter: int) -> Shape:
    """The shape drawn in a random shade within `jitter` of its palette colour (unchanged when jitter is 0)."""
    if not jitter:
        return shape
    shade = np.clip(np.array(PALETTE[shape.colour]) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    return dataclasses.replace(shape, shade=tuple(int(c) for c in shade))


def _too_close(a: Shape, b: Shape, size: int, gap: float = GAP) -> bool:
    return np.hypot(a.x - b.x, a.y - b.y) < BOUND * (a.radius + b.radius) + gap * size


def describe(scene: Scene) -> str:
    """The scene in words, one shape per clause: 'a red circle at (20, 41), a blue square at (45, 18)'."""
    parts = []
    for shape in scene.shapes:
        pointing = " pointing down" if shape.upside_down and shape.kind == "triangle" else ""
        article = "an" if shape.colour[0] in "aeiou" else "a"
        parts.append(f"{article} {shape.name}{pointing} at ({shape.x:.0f}, {shape.y:.0f})")
    painted = f" on a {scene.background} background" if scene.background != BACKGROUND else ""
    return ", ".join(parts) + painted


def scene_kinds(scene: Scene) -> str:
    """The kinds of shape in a scene, in KINDS order, joined by '+': e.g. 'circle+square'."""
    present = {shape.kind for shape in scene.shapes}
    return "+".join(kind for kind in KINDS if kind in present)


# What a scene can hold (two or three shapes, each kind at most once): every pair of kinds, then all three.
KIND_GROUPS = tuple("+".join(kinds) for count in (2, 3) for kinds in itertools.combinations(KINDS, count))


def moves_off_itself(shape: Shape, new_x: float, new_y: float) -> bool:
    """True when the shape's bounding disc at (new_x, new_y) does not overlap the one at its old place."""
    return np.hypot(new_x - shape.x, new_y - shape.y) >= 2 * BOUND * shape.radius


# --- edit families ----------------------------------------------------------------------
# Each edit takes (scene, rng) and returns (target scene, words for the phrasing), or None when
# the scene does not suit the edit (e.g. mirroring a scene whose shapes all sit on the midline):
# then the generator draws another scene. Every accepted edit visibly changes the picture.

def recolour_one(scene: Scene, rng: np.random.Generator):
    index = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[index]
    colour = str(rng.choice([c for c in PALETTE if c != shape.colour]))
    shapes = list(scene.shapes)
    shapes[index] = dataclasses.replace(shape, colour=colour, shade=None)
    return Scene(scene.size, tuple(shapes)), {"shape": shape.kind, "colour": colour}


def recolour_all(scene: Scene, rng: np.random.Generator):
    colour = str(rng.choice(_new_for_some(scene)))  # at least one shape changes
    shapes = tuple(dataclasses.replace(shape, colour=colour, shade=None) for shape in scene.shapes)
    return Scene(scene.size, shapes), {"colour": colour}


def _new_for_some(scene: Scene) -> list[str]:
    """Palette colours that at least one shape does not have yet (all of them when two shapes differ)."""
    used = {shape.colour for shape in scene.shapes}
    return [c for c in PALETTE if c not in used] if len(used) == 1 else list(PALETTE)


def remove(scene: Scene, rng: np.random.Generator):
    index = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[index]
    shapes = scene.shapes[:index] + scene.shapes[index + 1:]
    return Scene(scene.size, shapes), {"shape": shape.kind, "colour": shape.colour}


def mirror(scene: Scene, rng: np.random.Generator):
    """Mirror left to right: x -> size - x (squares, circles and triangles are left-right symmetric)."""
    if not any(moves_off_itself(s, scene.size - s.x, s.y) for s in scene.shapes):
        return None
    shapes = tuple(dataclasses.replace(s, x=scene.size - s.x) for s in scene.shapes)
    return Scene(scene.size, shapes), {}


def flip_upside_down(scene: Scene, rng: np.random.Generator):
    """Flip top to bottom: y -> size - y, and triangles turn over."""
    if not any(moves_off_itself(s, s.x, scene.size - s.y) for s in scene.shapes):
        return None
    shapes = tuple(dataclasses.replace(s, y=scene.size - s.y, upside_down=(s.kind == "triangle") != s.upside_down)
                   for s in scene.shapes)
    return Scene(scene.size, shapes), {}


# Candidates for the LoRA notebook's live run (reserved: the base model never sees them). The corpus
# has one phrasing for each. Colours are PALETTE colours: the miniature's VAE, trained on the toy
# world, cannot draw others (black comes back brown). It cannot draw a coloured background either
# (its round trip of background_colour targets fails every one), so that edit is out of reach of
# any transformer on this VAE; it stays as a measured example of the decoder's ceiling.

def background_colour(scene: Scene, rng: np.random.Generator):
    """Paint the background a palette colour that no shape has; the shapes stay."""
    colour = str(rng.choice([c for c in PALETTE if c not in {s.colour for s in scene.shapes}]))
    return Scene(scene.size, scene.shapes, colour), {"colour": colour}


def keep_only(scene: Scene, rng: np.random.Generator):
    """Keep one of three shapes, remove the other two (two-shape scenes are rejected: that is `remove`)."""
    if len(scene.shapes) != 3:
        return None
    shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
    return Scene(scene.size, (shape,), scene.background), {"shape": shape.kind}


def swap_colours(scene: Scene, rng: np.random.Generator):
    """Two shapes exchange their colours (scenes of three shapes are rejected: which two?)."""
    if len(scene.shapes) != 2 or scene.shapes[0].colour == scene.shapes[1].colour:
        return None
    first, second = scene.shapes
    shapes = (dataclasses.replace(first, colour=second.colour, shade=second.shade),
              dataclasses.replace(second, colour=first.colour, shade=first.shade))
    return Scene(scene.size, shapes, scene.background), {}


NEW_COLOUR_WORD = ("gold", "yellow")  # a colour word the base model never saw, for a colour its VAE can draw


def everything_gold(scene: Scene, rng: np.random.Generator):
    """Recolour every shape, named by a word the base model never saw: gold, drawn as the palette's yellow."""
    word, colour = NEW_COLOUR_WORD
    if all(shape.colour == colour for shape in scene.shapes):
        return None
    shapes = tuple(dataclasses.replace(shape, colour=colour, shade=None) for shape in scene.shapes)
    return Scene(scene.size, shapes, scene.background), {"colour": word}


# Phrasings: every template is one of prompt_corpus.EDIT_TEMPLATES, so it tokenizes into whole words.
FAMILIES = {
    "recolour_one": (recolour_one, (
        "make the {shape} {colour}",
        "turn the {shape} {colour}",
        "change the colour of the {shape} to {colour}",
        "recolour the {shape} {colour}",
        "paint the {shape} {colour}",
    )),
    "recolour_all": (recolour_all, (
        "make everything {colour}",
        "paint all shapes {colour}",
        "turn every shape {colour}",
    )),
    "remove": (remove, (
        "remove the {shape}",
        "delete the {colour} {shape}",
        "erase the {shape}",
        "take away the {colour} {shape}",
        "get rid of the {shape}",
    )),
    "mirror": (mirror, (
        "mirror the image",
        "mirror the picture left to right",
        "flip the image horizontally",
        "flip it left to right",
    )),
    "flip_upside_down": (flip_upside_down, (
        "flip the image upside down",
        "flip the picture vertically",
        "turn the image upside down",
    )),
    "background_colour": (background_colour, ("make the background {colour}",)),
    "keep_only": (keep_only, ("keep the {shape} and remove everything else",)),
    "swap_colours": (swap_colours, ("swap the colours of the shapes",)),
    "everything_gold": (everything_gold, ("make everything {colour}", "paint all shapes {colour}",
                                          "turn every shape {colour}")),
}
FAMILY_COLOUR_WORDS = {"everything_gold": (NEW_COLOUR_WORD[0],)}  # {colour} words of a family, if not PALETTE's
BASE_FAMILIES = ("recolour_one", "recolour_all", "remove", "mirror")
# For the LoRA notebook: the base model never trains on these (new families go at the end of FAMILIES,
# whose order seeds every family's random stream).
RESERVED_FAMILIES = ("flip_upside_down", "background_colour", "keep_only", "swap_colours", "everything_gold")


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown edit family {family!r}; use one of {tuple(FAMILIES)}")


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (train seeds {TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}, "
                         f"held-out seeds {HELDOUT_SEEDS.start}..{HELDOUT_SEEDS.stop - 1}); got {seed!r}")


def split_of(seed: int) -> str:
    """'train' or 'heldout': which split a seed belongs to."""
    check_seed(seed)
    for name, seeds in SPLITS.items():
        if seed in seeds:
            return name
    raise ValueError(f"seed {seed} lies outside both splits (train {TRAIN_SEEDS}, held-out {HELDOUT_SEEDS})")


def all_instructions(family: str) -> list[str]:
    """Every instruction the family can produce (for caching text embeddings), in a fixed order."""
    check_family(family)
    lines = []
    for template in FAMILIES[family][1]:
        for kind in KINDS if "{shape}" in template else [None]:
            for colour in FAMILY_COLOUR_WORDS.get(family, tuple(PALETTE)) if "{colour}" in template else [None]:
                lines.append(template.format(shape=kind, colour=colour))
    return lines


def check_radius_range(radius_range) -> None:
    low, high = radius_range
    if not 0.03 <= low <= high <= 0.2:
        raise ValueError(f"radius_range must satisfy 0.03 <= low <= high <= 0.2 (fractions of the side; larger "
                         f"shapes do not fit two or three to a picture); got {radius_range!r}")


# Scene styles: "toy" is the world of every evaluation and picture; "wide" a training augmentation.
DEFAULT_STYLE = SceneStyle()
WIDE_STYLE = SceneStyle(radius_range=(0.07, 0.2), gap=0.015, inside=0.7, same_colour_share=0.3, shade_jitter=12)
STYLES = {"toy": DEFAULT_STYLE, "wide": WIDE_STYLE}


def make_pair(seed: int, family: str, size: int = IMAGE_SIZE, radius_range=RADIUS_RANGE,
              style: SceneStyle | None = None) -> EditPair:
    """The pair of one seed and one family. The scene depends on the seed only (the same scene for
    every family) unless the family rejects it; the edit and its phrasing depend on both.
    `radius_range` widens or narrows the shapes' sizes (the base model trained on RADIUS_RANGE); a
    `style` (e.g. WIDE_STYLE) replaces all the scene rules, its radius range included."""
    check_seed(seed)
    check_radius_range(radius_range)
    if style is not None and tuple(radius_range) != RADIUS_RANGE:
        raise ValueError("give the radius range inside the style (SceneStyle(radius_range=...)), not both")
    check_family(family)
    check_size(size)
    edit, templates = FAMILIES[family]
    family_rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    for attempt in range(MAX_ATTEMPTS):
        source_scene = random_scene(np.random.default_rng([seed, attempt, size]), size, radius_range, style)
        result = edit(source_scene, family_rng)
        if result is not None:
            break
    else:
        raise RuntimeError(f"no scene for seed {seed} suits {family}; this should not happen")
    target_scene, words = result
    template = templates[int(family_rng.integers(len(templates)))]
    return EditPair(seed, family, template.format(**words), render(source_scene), render(target_scene),
                    source_scene, target_scene)


def make_pairs(split: str, count: int, families=BASE_FAMILIES, size: int = IMAGE_SIZE,
               start: int = 0, workers: int = 1, radius_range=RADIUS_RANGE,
               style: SceneStyle | None = None) -> list[EditPair]:
    """count pairs from a split, families taking turns: pair i uses seed split.start + start + i.
    `style` draws the scenes by other rules (make_pair).

    workers > 1 renders in that many processes; the pairs are the same as with one.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' (for training) or 'heldout' (for evaluation)")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int (processes that render), got {workers!r}")
    families = tuple(families)
    if not families:
        raise ValueError(f"give at least one edit family, e.g. {BASE_FAMILIES}")
    for family in families:
        check_family(family)
    seeds = SPLITS[split]
    if start < 0 or start + count > len(seeds):
        raise ValueError(f"start {start} + count {count} leaves the {split} split ({len(seeds)} seeds)")
    jobs = ([seeds.start + start + i for i in range(count)], [families[i % len(families)] for i in range(count)],
            [size] * count, [tuple(radius_range)] * count, [style] * count)
    if workers == 1 or count < 2 * workers:
        return list(map(make_pair, *jobs))
    # spawn, not fork: the caller may already hold CUDA or torch threads, which fork does not copy safely
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(make_pair, *jobs, chunksize=max(1, count // (8 * workers))))


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or an array -> [H, W, 3] float32 in [0, 1] (uint8 arrays are divided by 255)."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {array.shape}; convert with image.convert('RGB')")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if array.min() < 0 or array.max() > 1:
        raise ValueError("float images must lie in [0, 1]; divide 0..255 pixels by 255 (or pass uint8)")
    return array


def random_images(rng: np.random.Generator, count: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """[count, size, size, 3] uint8 scenes for training the VAE (any picture of the toy world)."""
    images = []
    for _ in range(count):
        scene = random_scene(rng, size)
        if rng.random() < 0.5:  # triangles of both orientations occur in the world
            scene = Scene(size, tuple(dataclasses.replace(s, upside_down=s.kind == "triangle") for s in scene.shapes))
        images.append(np.asarray(render(scene)))
    return np.stack(images)
