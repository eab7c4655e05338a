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


def pair_folder_with(tmp_path, source: Image.Image):
    source.save(tmp_path / "a.png")
    image(source.size).save(tmp_path / "b.png")
    return write_folder(tmp_path, [{"source": "a.png", "target": "b.png", "instruction": "x"}])


def test_sixteen_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np

    grey = Image.fromarray(np.full((32, 32), 30000, dtype=np.uint16))  # a mid grey in 16 bits
    notes = []
    (pair,) = load_pair_folder(pair_folder_with(tmp_path, grey), notes)
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    assert pair.source.mode == "RGB" and pair.source.getpixel((0, 0)) == (117, 117, 117)  # 30000 / 257
    assert notes == ["a.png: 16-bit greyscale (I;16): scaled to 8 bits"]


def test_transparency_is_composited_on_white_and_reported(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (200, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 200, 255), (0, 0, 16, 32))  # left half opaque blue
    notes = []
    (pair,) = load_pair_folder(pair_folder_with(tmp_path, rgba), notes)
    assert pair.source.getpixel((0, 0)) == (0, 0, 200) and pair.source.getpixel((31, 0)) == (255, 255, 255)
    assert notes == ["a.png: RGBA image with transparency: composited on white"]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK"])
def test_other_modes_become_rgb(tmp_path, mode):
    source = Image.new("RGB", (32, 32), (102, 102, 102)).convert(mode)  # a grey in the web palette too
    (pair,) = load_pair_folder(pair_folder_with(tmp_path, source) if mode != "CMYK" else cmyk_folder(tmp_path, source))
    assert pair.source.mode == "RGB" and pair.source.getpixel((5, 5))[0] in range(97, 108)


def cmyk_folder(tmp_path, source):
    source.save(tmp_path / "a.jpg", quality=100)
    image(source.size).save(tmp_path / "b.png")
    return write_folder(tmp_path, [{"source": "a.jpg", "target": "b.png", "instruction": "x"}])


def test_a_mode_without_a_clear_range_is_refused(tmp_path):
    Image.new("F", (32, 32), 3.5).save(tmp_path / "a.tif")
    image().save(tmp_path / "b.png")
    folder = write_folder(tmp_path, [{"source": "a.tif", "target": "b.png", "instruction": "x"}])
    with pytest.raises(PairDataError, match="pairs.jsonl:1: .*a.tif: image mode 'F' is not supported.*Scale it"):
        load_pair_folder(folder)


def test_pairs_made_in_python_must_be_rgb():
    from kontext_teach.training.edit_pairs import check_pair

    with pytest.raises(PairDataError, match=r"the source image has mode RGBA.*image.convert\('RGB'\).*to_rgb"):
        check_pair(EditPair(Image.new("RGBA", (32, 32)), "x", image((32, 32)), "my pair"))


def test_a_json_array_is_told_apart_from_json_lines(tmp_path):
    (tmp_path / "pairs.jsonl").write_text(json.dumps([{"source": "a.png", "target": "b.png", "instruction": "x"}]))
    with pytest.raises(PairDataError, match="holds one JSON array; the format is JSON Lines: one object per line"):
        load_pair_folder(tmp_path)
    (tmp_path / "pairs.jsonl").write_text('"a.png"\n')
    with pytest.raises(PairDataError, match="pairs.jsonl:1: expected a JSON object .* got a str"):
        load_pair_folder(tmp_path)
