"""The offline book: `make book`'s pages read without a network (widgets as static views of their
stored state, formulas as MathML, no CDN scripts), checked in headless Chromium where it exists."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


offline_book, check_book = load_script("offline_book"), load_script("check_book")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The committed 02 (formulas, text widgets) and 06 (picture widget) as nbconvert writes them."""
    folder = tmp_path_factory.mktemp("book")
    raw = {}
    for name in ("02_prompt_encoding", "06_shift_schedule"):
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", 4))
        raw[name] = body
        (folder / f"{name}.html").write_text(offline_book.offline_page(body), encoding="utf-8")
    return folder, raw


def test_nbconverts_page_needs_the_network_and_ours_does_not(pages):
    folder, raw = pages
    assert "loads a script from the network" in check_book.static_problems(raw["06_shift_schedule"])
    assert "has raw $$ math in a markdown cell" in check_book.static_problems(raw["02_prompt_encoding"])
    for page in folder.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert check_book.static_problems(text) == []
        assert "cdnjs" not in text and "unpkg" not in text


def test_formulas_become_mathml_and_code_keeps_its_dollars(pages):
    folder, _ = pages
    text = (folder / "02_prompt_encoding.html").read_text(encoding="utf-8")
    assert text.count('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"') == 2
    assert text.count('display="inline"') >= 2 and "endoftext" in text
    assert offline_book.static_math('<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown">costs $5 and $6 '
                                    "<code>$$x$$</code></div>").count("<math") == 0


def test_widgets_become_their_stored_views(pages):
    folder, _ = pages
    text = (folder / "06_shift_schedule.html").read_text(encoding="utf-8")
    assert 'class="kt-widget-image"' in text and "data:image/png;base64,iVBOR" in text
    assert text.count('type="range" disabled') == 3  # height, width, num_steps at their stored values


def test_each_control_shows_its_stored_value():
    models = {
        "box": dict(model_name="VBoxModel", state=dict(children=["IPY_MODEL_s", "IPY_MODEL_d", "IPY_MODEL_o"])),
        "s": dict(model_name="IntSliderModel", state=dict(description="steps", min=1, max=50, step=1, value=28)),
        "d": dict(model_name="DropdownModel", state=dict(description="size", _options_labels=["a", "b"], index=1)),
        "o": dict(model_name="OutputModel", state=dict(outputs=[dict(output_type="stream", text="hi <x>")])),
    }
    view = offline_book.render_widget("box", models)
    assert 'value="28"' in view and "<label>steps</label>" in view
    assert "<option selected>b</option>" in view and "hi &lt;x&gt;" in view
    assert "not stored" in offline_book.render_widget("missing", models)


@pytest.mark.skipif(check_book.browser() is None, reason="no chromium on the PATH (apt-get install chromium)")
def test_headless_chromium_draws_the_math_and_the_widget_pictures(pages, tmp_path):
    folder, _ = pages
    problems, report = check_book.browser_problems(check_book.browser(), folder / "02_prompt_encoding.html", None)
    assert problems == [] and len(report["math"]) == 4 and report["widgets"] >= 1
    problems, report = check_book.browser_problems(check_book.browser(), folder / "06_shift_schedule.html", tmp_path)
    assert problems == [] and report["images"] and report["images"][0]["natural"] > 100
    assert (tmp_path / "06_shift_schedule.png").stat().st_size > 10_000
