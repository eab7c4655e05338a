"""The dataset folder format and its errors."""

import json

import pytest
from PIL import Image

from kontext_teach.training.edit_pairs import EditPair, PairDataError, load_pair_folder, save_pair_folder


def image(size=(32, 48), colour=(200, 30, 30), mode="RGB"):
    return Image.new(mode, size, colour if mode == "RGB" else 128)


def write_folder(tmp_path, records, images=None):
    for name, img in (images or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / name)
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return tmp_path


def test_round_trip_through_the_folder_format(tmp_path):
    pairs = [EditPair(image(), "make it blue", image(colour=(30, 30, 200))) for _ in range(3)]
    loaded = load_pair_folder(save_pair_folder(pairs, tmp_path / "data"))
    assert [p.instruction for p in loaded] == ["make it blue"] * 3
    assert loaded[0].target.getpixel((0, 0)) == (30, 30, 200) and loaded[0].source.size == (32, 48)


def test_csv_index_and_odd_modes_become_rgb(tmp_path):
    image(mode="L").save(tmp_path / "a.png")
    image().save(tmp_path / "b.png")
    (tmp_path / "pairs.csv").write_text("source,target,instruction\na.png,b.png,colour it\n")
    (pair,) = load_pair_folder(tmp_path)
    assert pair.source.mode == "RGB" and pair.instruction == "colour it"


def test_missing_image_names_file_and_line(tmp_path):
    folder = write_folder(tmp_path, [{"source": "a.png", "target": "nope.png", "instruction": "x"}],
                          {"a.png": image()})
    with pytest.raises(PairDataError, match=r"pairs.jsonl:1: image file .*nope.png does not exist"):
        load_pair_folder(folder)


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    folder = write_folder(tmp_path, [{"source": "broken.png", "target": "broken.png", "instruction": "x"}])
    with pytest.raises(PairDataError, match="cannot read image .*broken.png"):
        load_pair_folder(folder)


def test_size_mismatch(tmp_path):
    folder = write_folder(tmp_path, [{"source": "a.png", "target": "b.png", "instruction": "x"}],
                          {"a.png": image((32, 32)), "b.png": image((48, 32))})
    with pytest.raises(PairDataError, match="source is 32x32 but target is 48x32"):
        load_pair_folder(folder)


def test_size_not_divisible_by_16(tmp_path):
    folder = write_folder(tmp_path, [{"source": "a.png", "target": "a.png", "instruction": "x"}],
                          {"a.png": image((40, 32))})
    with pytest.raises(PairDataError, match="not a multiple of 16.*e.g. to 32x32"):
        load_pair_folder(folder)


def test_empty_instruction(tmp_path):
    folder = write_folder(tmp_path, [{"source": "a.png", "target": "a.png", "instruction": "  "}],
                          {"a.png": image()})
    with pytest.raises(PairDataError, match="pairs.jsonl:1: empty instruction"):
        load_pair_folder(folder)


def test_missing_field_and_bad_json(tmp_path):
    folder = write_folder(tmp_path, [{"source": "a.png", "instruction": "x"}], {"a.png": image()})
    with pytest.raises(PairDataError, match="missing field\\(s\\) target"):
        load_pair_folder(folder)
    (tmp_path / "pairs.jsonl").write_text("{oops\n")
    with pytest.raises(PairDataError, match="pairs.jsonl:1: not valid JSON"):
        load_pair_folder(tmp_path)


def test_no_index_or_folder(tmp_path):
    with pytest.raises(PairDataError, match="no pairs.jsonl or pairs.csv"):
        load_pair_folder(tmp_path)
    with pytest.raises(PairDataError, match="does not exist"):
        load_pair_folder(tmp_path / "missing")
