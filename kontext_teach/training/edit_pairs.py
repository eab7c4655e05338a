"""Training data for Kontext: pairs (condition image, instruction, target image).

A dataset folder holds the images and one index file, ``pairs.jsonl`` (one JSON object per
line) or ``pairs.csv`` (a header line), with three fields per pair:

    {"source": "before/001.png", "target": "after/001.png", "instruction": "make the cup red"}

Paths are relative to the folder. ``load_pair_folder`` checks everything before training
starts and names the file and line of any problem. Images become RGB by the series' policy
(``preprocessing.to_rgb``): transparency is composited on white, 16-bit greyscale is scaled
to 8 bits, L, P and CMYK are converted; each such change is reported in ``notes``.
"""

import csv
import json
import pathlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ..preprocessing import SIXTEEN_BIT_MODES, check_image_mode, has_alpha, to_rgb

MULTIPLE_OF = 16  # 8 for the VAE x 2 for the 2x2 packing
FIELDS = ("source", "target", "instruction")


class PairDataError(ValueError):
    """A dataset problem, with the file (and line) it is in and what to do about it."""


@dataclass
class EditPair:
    source: Image.Image  # the condition image
    instruction: str
    target: Image.Image  # what the edit should produce
    name: str = ""  # where it came from, for messages


def check_pair(pair: EditPair) -> None:
    """Raise PairDataError if the pair cannot be trained on as it is."""
    where = getattr(pair, "name", "") or "pair"
    if not pair.instruction or not pair.instruction.strip():
        raise PairDataError(f"{where}: empty instruction; every pair needs the edit it shows, in words")
    for name in ("source", "target"):
        try:
            check_image_mode(getattr(pair, name), f"the {name} image")
        except ValueError as error:
            raise PairDataError(f"{where}: {error}") from None
    if pair.source.size != pair.target.size:
        raise PairDataError(f"{where}: source is {pair.source.size[0]}x{pair.source.size[1]} but target is "
                            f"{pair.target.size[0]}x{pair.target.size[1]}; resize both to one size")
    width, height = pair.source.size
    if width % MULTIPLE_OF or height % MULTIPLE_OF:
        fixed = (width // MULTIPLE_OF * MULTIPLE_OF, height // MULTIPLE_OF * MULTIPLE_OF)
        raise PairDataError(f"{where}: size {width}x{height} is not a multiple of {MULTIPLE_OF} (8 for the VAE x 2 "
                            f"for packing); crop or resize it, e.g. to {fixed[0]}x{fixed[1]}")


def conversion_note(image: Image.Image) -> str | None:
    """What to_rgb will do to an image that is not plain RGB, in words (None for plain RGB)."""
    if has_alpha(image):
        return f"{image.mode} image with transparency: composited on white"
    if image.mode in SIXTEEN_BIT_MODES:
        return f"16-bit greyscale ({image.mode}): scaled to 8 bits"
    return None if image.mode == "RGB" else f"mode {image.mode}: converted to RGB"


def open_rgb(path: pathlib.Path, where: str, notes: list[str] | None = None) -> Image.Image:
    """The image at `path` as RGB (preprocessing.to_rgb); what was converted is appended to `notes`."""
    if not path.is_file():
        raise PairDataError(f"{where}: image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            note = conversion_note(image)
            rgb = to_rgb(image)
    except (UnidentifiedImageError, OSError) as error:
        raise PairDataError(f"{where}: cannot read image {path} ({error})") from error
    except ValueError as error:  # a mode without a clear value range (I, F, ...)
        raise PairDataError(f"{where}: {path}: {error}") from error
    if note and notes is not None:
        notes.append(f"{path.name}: {note}")
    return rgb


def read_index(folder: pathlib.Path) -> list[tuple[str, dict]]:
    """(where, record) for every line of pairs.jsonl or every row of pairs.csv."""
    jsonl, table = folder / "pairs.jsonl", folder / "pairs.csv"
    if jsonl.is_file():
        text = jsonl.read_text()
        if text.lstrip().startswith("["):
            raise PairDataError(f"{jsonl} holds one JSON array; the format is JSON Lines: one object per line, "
                                f'e.g. {{"source": "a.png", "target": "b.png", "instruction": "..."}}. Convert it '
                                "with: python -c \"import json,sys; [print(json.dumps(r)) for r in "
                                "json.load(sys.stdin)]\" < old.json > pairs.jsonl")
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise PairDataError(f"{jsonl}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise PairDataError(f"{jsonl}:{number}: expected a JSON object with the fields {', '.join(FIELDS)}, "
                                    f"got a {type(record).__name__}")
            records.append((f"{jsonl}:{number}", record))
        return records
    if table.is_file():
        with table.open(newline="") as handle:
            return [(f"{table}:{number}", row) for number, row in enumerate(csv.DictReader(handle), start=2)]
    raise PairDataError(f"{folder} has no pairs.jsonl or pairs.csv; write one line per pair with the fields "
                        f"{', '.join(FIELDS)} (see kontext_teach.training.edit_pairs)")


def load_pair_folder(folder, notes: list[str] | None = None) -> list[EditPair]:
    """All pairs of a dataset folder, checked; image conversions are appended to `notes`."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise PairDataError(f"dataset folder {folder} does not exist")
    pairs = []
    for where, record in read_index(folder):
        missing = [field for field in FIELDS if field not in record]
        if missing:
            raise PairDataError(f"{where}: missing field(s) {', '.join(missing)}; each pair needs {', '.join(FIELDS)}")
        pair = EditPair(open_rgb(folder / record["source"], where, notes), str(record["instruction"]),
                        open_rgb(folder / record["target"], where, notes), where)
        check_pair(pair)
        pairs.append(pair)
    if not pairs:
        raise PairDataError(f"{folder}: the index lists no pairs")
    return pairs


def save_pair_folder(pairs: list[EditPair], folder) -> pathlib.Path:
    """Write pairs in the folder format (PNG images + pairs.jsonl); returns the folder."""
    folder = pathlib.Path(folder)
    (folder / "source").mkdir(parents=True, exist_ok=True)
    (folder / "target").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, pair in enumerate(pairs):
        source, target = f"source/{index:05d}.png", f"target/{index:05d}.png"
        pair.source.save(folder / source)
        pair.target.save(folder / target)
        lines.append(json.dumps({"source": source, "target": target, "instruction": pair.instruction}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder
