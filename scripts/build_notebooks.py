"""Turn the percent-format sources in notebooks/src/ into notebooks/*.ipynb (unexecuted).

    python scripts/build_notebooks.py [--force] [notebooks/src/04_packing.py ...]

A notebook whose cells already match its source is left alone, outputs and all (--force
rebuilds it anyway); one whose source changed is rewritten without outputs.

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


def cell_contents(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What a notebook's cells hold apart from outputs: (type, source, tags)."""
    return [(cell.cell_type, cell.source, list(cell.metadata.get("tags", []))) for cell in nb.cells]


def main(args: list[str]) -> None:
    force = "--force" in args
    paths = [arg for arg in args if arg != "--force"]
    sources = [pathlib.Path(p).resolve() for p in paths] or sorted(SRC.glob("[0-9A-Z]*.py"))
    for source in sources:
        target = ROOT / "notebooks" / (source.stem + ".ipynb")
        notebook = build(source)
        if not force and target.is_file() and cell_contents(nbformat.read(target, as_version=4)) == cell_contents(notebook):
            print(f"{source.relative_to(ROOT)}: unchanged, {target.relative_to(ROOT)} kept with its outputs")
            continue
        nbformat.write(notebook, target, version=4)
        print(f"{source.relative_to(ROOT)} -> {target.relative_to(ROOT)} (execute it: make execute NB=...)")


if __name__ == "__main__":
    main(sys.argv[1:])
