"""Make nbconvert's HTML book readable offline: static widget views and MathML math.

    python scripts/offline_book.py build/*.html        # rewrites each file in place

nbconvert's page loads require.js, the widget manager and MathJax from CDNs; offline its widgets
are blank and its math is raw `$$...$$`. This rewrites each page so it needs nothing from the
network:
  * every widget view becomes the static HTML of its stored state (the series' widgets draw into
    widgets.HTML / widgets.Image / widgets.Output, whose state holds the drawn HTML / PNG / outputs;
    controls are shown at their stored values, disabled);
  * `$$...$$` and `$...$` in markdown cells become MathML (latex2mathml), which browsers draw natively;
  * the CDN <script> tags are removed.
"""

import base64
import html
import json
import re
import sys
from pathlib import Path

from latex2mathml.converter import convert as latex_to_mathml

STATE_RE = re.compile(r'<script type="application/vnd\.jupyter\.widget-state\+json">\s*(.*?)\s*</script>', re.S)
VIEW_RE = re.compile(r'(?:<script type="text/javascript">\s*var element = document\.getElementById\([^)]*\);\s*</script>\s*)?'
                     r'<script type="application/vnd\.jupyter\.widget-view\+json">\s*(.*?)\s*</script>', re.S)
CDN_SCRIPT_RES = [
    re.compile(r'<script src="https://[^"]*(?:require|mathjax)[^"]*">\s*</script>', re.S | re.I),
    re.compile(r'<script>\s*\(function\(\) \{\s*function addWidgetsRenderer\(\).*?</script>', re.S),
    re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S),
    re.compile(r'<script type="module">[^<]*mermaid.*?</script>', re.S),
]
MARKDOWN_START = '<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown'
CELL_START = '<div class="jp-Cell '
OFFLINE_CSS = """<style>/* offline_book.py: static widget views */
.kt-widget-box { display: flex; gap: 4px; } .kt-widget-vbox { flex-direction: column; }
.kt-widget-hbox { flex-direction: row; flex-wrap: wrap; }
.kt-widget-control { font: 13px sans-serif; display: flex; align-items: center; gap: 8px; margin: 2px 0; }
.kt-widget-control label { min-width: 8em; }
.kt-widget-note { font: italic 12px sans-serif; color: #666; }
</style>"""


def widget_state(page: str) -> dict:
    """model_id -> {model_name, state, buffers} from the page's stored widget state ({} if none)."""
    match = STATE_RE.search(page)
    return json.loads(html.unescape(match.group(1)))["state"] if match else {}


def _ref(value) -> str | None:
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None


def _label(state: dict) -> str:
    text = state.get("description", "")
    return f"<label>{text if state.get('description_allow_html') else html.escape(text)}</label>" if text else ""


def _output_html(output: dict) -> str:
    if output.get("output_type") == "stream":
        return f"<pre>{html.escape(''.join(output.get('text', '')))}</pre>"
    data = output.get("data", {})
    if "image/png" in data:
        return f'<img alt="" src="data:image/png;base64,{"".join(data["image/png"]).strip()}"/>'
    if "text/html" in data:
        return "".join(data["text/html"])
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def render_widget(model_id: str, models: dict) -> str:
    """Static HTML for one widget model and its children."""
    model = models.get(model_id)
    if model is None:
        return '<div class="kt-widget-note">(widget state not stored)</div>'
    name, state = model["model_name"], model["state"]
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        kind = "kt-widget-hbox" if name == "HBoxModel" else "kt-widget-vbox"
        children = "".join(render_widget(_ref(child), models) for child in state.get("children", []))
        return f'<div class="kt-widget-box {kind}">{children}</div>'
    if name == "HTMLModel":
        return f'<div class="kt-widget-html">{_label(state)}{state.get("value", "")}</div>'
    if name in ("LabelModel", "HTMLMathModel"):
        return f'<div class="kt-widget-control">{html.escape(state.get("value", ""))}</div>'
    if name == "ImageModel":
        buffer = next((b for b in model.get("buffers", []) if b.get("path") == ["value"]), None)
        if buffer is None:
            return '<div class="kt-widget-note">(image not stored)</div>'
        data = buffer["data"] if buffer.get("encoding") == "base64" else base64.b64encode(buffer["data"].encode()).decode()
        size = "".join(f' {key}="{html.escape(str(state[key]))}"' for key in ("width", "height") if state.get(key))
        return f'<img class="kt-widget-image" alt="widget picture" src="data:image/{state.get("format", "png")};base64,{data}"{size}/>'
    if name == "OutputModel":
        return '<div class="kt-widget-output">' + "".join(_output_html(o) for o in state.get("outputs", [])) + "</div>"
    if name in ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"):
        value = state.get("value")
        return (f'<div class="kt-widget-control">{_label(state)}<input type="range" disabled min="{state.get("min")}" '
                f'max="{state.get("max")}" step="{state.get("step")}" value="{value}"/><span>{value}</span></div>')
    if name in ("IntProgressModel", "FloatProgressModel"):
        return (f'<div class="kt-widget-control">{_label(state)}<progress max="{state.get("max")}" '
                f'value="{state.get("value")}"></progress></div>')
    if name in ("DropdownModel", "ToggleButtonsModel", "RadioButtonsModel", "SelectModel"):
        labels, index = state.get("_options_labels", []), state.get("index")
        chosen = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
        options = "".join(f"<option{' selected' if label == chosen else ''}>{html.escape(label)}</option>"
                          for label in labels)
        return f'<div class="kt-widget-control">{_label(state)}<select disabled>{options}</select></div>'
    if name == "CheckboxModel":
        checked = " checked" if state.get("value") else ""
        return f'<div class="kt-widget-control">{_label(state)}<input type="checkbox" disabled{checked}/></div>'
    if name in ("TextModel", "TextareaModel", "IntTextModel", "FloatTextModel"):
        return (f'<div class="kt-widget-control">{_label(state)}<input type="text" disabled '
                f'value="{html.escape(str(state.get("value", "")))}"/></div>')
    if name == "ButtonModel":
        return f'<div class="kt-widget-control"><button disabled>{html.escape(state.get("description", ""))}</button></div>'
    return f'<div class="kt-widget-note">({html.escape(name)}: no static view)</div>'


def static_widgets(page: str) -> str:
    """Each widget view replaced by its static HTML, with a note that it is a snapshot."""
    models = widget_state(page)
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        count += 1
        view = json.loads(html.unescape(match.group(1)))
        return (f'<div class="kt-widget-static" id="kt-widget-{count}">{render_widget(view["model_id"], models)}'
                '<div class="kt-widget-note">Static view of the widget as last drawn: run the notebook to move it.'
                '</div></div>')
    return VIEW_RE.sub(replace, page)


def _math(match: re.Match) -> str:
    display = match.group(1) is not None
    latex = html.unescape(match.group(1) if display else match.group(2))
    latex = re.sub(r"\\text\{([^}]*)\}", lambda m: r"\text{" + m.group(1).replace(r"\_", "_") + "}", latex)
    return latex_to_mathml(latex, display="block" if display else "inline")


MATH_RE = re.compile(r"\$\$(.+?)\$\$|(?<![\\$\w])\$([^$\n<>]+?)\$(?![\w$])", re.S)
CODE_RE = re.compile(r"(<(code|pre)\b.*?</\2>)", re.S)


def static_math(page: str) -> str:
    """$$...$$ and $...$ in markdown cells (not in code) become MathML."""
    parts, position = [], 0
    while (start := page.find(MARKDOWN_START, position)) >= 0:
        end = page.find(CELL_START, start)
        end = len(page) if end < 0 else end
        pieces = CODE_RE.split(page[start:end])
        # split gives text, code, tag-name, text, ...: convert only the text pieces
        converted = [MATH_RE.sub(_math, piece) if i % 3 == 0 else piece
                     for i, piece in enumerate(pieces) if i % 3 != 2]
        parts += [page[position:start], "".join(converted)]
        position = end
    return "".join(parts) + page[position:]


def offline_page(page: str) -> str:
    """The page with static widgets, MathML and no CDN scripts."""
    page = static_math(static_widgets(page))
    for pattern in CDN_SCRIPT_RES:
        page = pattern.sub("", page)
    return page.replace("</head>", OFFLINE_CSS + "</head>", 1)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    for path in map(Path, paths):
        path.write_text(offline_page(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"{path}: offline")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
