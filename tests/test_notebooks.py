"""The notebooks as a series: built from their sources, executed, following the template."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SECTIONS = ["## What you will learn", "## Prerequisites", "## Theory", "## Practice", "## Summary",
            "## Exercises", "## References"]

spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source(path):
    src = ROOT / "notebooks" / "src" / (path.stem + ".py")
    assert src.is_file(), f"{path.name} has no source {src.relative_to(ROOT)}"
    expected = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in build_notebooks.build(src).cells]
    actual = [(c["cell_type"], source(c), c["metadata"].get("tags", [])) for c in cells(path)]
    assert actual == expected, f"{path.name} differs from {src.name}: rebuild and re-execute it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_template(path):
    markdown = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    positions = [markdown.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), f"{path.name} lacks {[s for s, p in zip(SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{path.name}: sections out of order"
    first_code = next(source(c) for c in cells(path) if c["cell_type"] == "code")
    assert "kt.setup()" in first_code, f"{path.name}: the first code cell must call kt.setup()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_without_stderr(path):
    code = [c for c in cells(path) if c["cell_type"] == "code" and source(c).strip()]
    assert all(c["execution_count"] is not None for c in code), f"{path.name} has unexecuted cells"
    for cell in code:
        for output in cell["outputs"]:
            assert output.get("name") != "stderr", f"{path.name}: stderr output in\n{source(cell)[:200]}"
            is_error = output["output_type"] == "error"
            assert not is_error or "raises-exception" in cell["metadata"].get("tags", []), f"{path.name}: error output"
        assert not any(line.lstrip().startswith(("%", "!")) for line in source(cell).splitlines()), \
            f"{path.name}: magics are not allowed in tested cells"
