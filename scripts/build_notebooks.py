"""Turn the percent-format sources in notebooks/src/ into notebooks/*.ipynb (unexecuted).

    python scripts/build_notebooks.py [notebooks/src/04_packing.py ...]

Source format (as in jupytext / VS Code): ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell whose lines start with ``# ``; tags go after the
marker: ``# %% tags=["gpu"]``. Then ``make execute NB=notebooks/04_packing.ipynb``
executes the notebook in place; commit both the source and the executed notebook.
tests/test_notebooks.py checks that they agree.
"""

import json
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")
KERNELSPEC = {"name": "kontext-teach", "display_name": "Python (kontext-teach)", "language": "python"}


def parse_cells(text: str) -> list[tuple[str, str, list[str]]]:
    """[(cell_type, source, tags)] from a percent-format script."""
    cells, current = [], None
    for line in text.splitlines():
        match = MARKER.match(line)
        if match:
            current = ["markdown" if match["markdown"] else "code", [], json.loads(match["tags"] or "[]")]
            cells.append(current)
        elif current is not None:
            if current[0] == "markdown":
                line = line[2:] if line.startswith("# ") else line.lstrip("#")
            current[1].append(line)
    return [(kind, "\n".join(lines).strip("\n"), tags) for kind, lines, tags in cells]


def build(source: pathlib.Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for index, (kind, text, tags) in enumerate(parse_cells(source.read_text())):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{source.stem[:2]}-{index:03d}"  # stable ids: no random churn in diffs
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def main(paths: list[str]) -> None:
    sources = [pathlib.Path(p).resolve() for p in paths] or sorted(SRC.glob("[0-9A-Z]*.py"))
    for source in sources:
        target = ROOT / "notebooks" / (source.stem + ".ipynb")
        nbformat.write(build(source), target, version=4)
        print(f"{source.relative_to(ROOT)} -> {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
