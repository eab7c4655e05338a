"""The series map, the overview's exercise solutions."""

import pathlib

import pytest

from kontext_teach.lab import series
from kontext_teach.solutions import s00_overview

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_notebook_is_on_the_map_in_order():
    names = [name for name, _ in series.NOTEBOOKS]
    present = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert set(present) <= set(names), set(present) - set(names)
    assert names == sorted(names)


def test_series_map_has_one_line_per_notebook():
    assert len(series.series_map().splitlines()) == len(series.NOTEBOOKS)


@pytest.mark.parametrize("height, width, target", [(1024, 1024, 4096), (1024, 768, 3072), (512, 512, 1024)])
def test_full_size_token_counts(pipe, height, width, target):
    counts = s00_overview.full_size_token_counts(height, width, {"tokenizer": pipe.tokenizer,
                                                                 "tokenizer_2": pipe.tokenizer_2})
    assert counts == dict(target=target, context=target, text=512, total=2 * target + 512)


def test_parameter_ratio(pipe):
    ratios = s00_overview.parameter_ratio(pipe.components)
    assert set(ratios) == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    assert all(r > 1 for r in ratios.values())
    assert ratios["transformer"] == pytest.approx(11_901_408_320 / sum(p.numel() for p in pipe.transformer.parameters()))
