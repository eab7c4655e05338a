"""Check the offline book in a real headless browser: math drawn as MathML, widget pictures decoded.

    python scripts/check_book.py build/*.html [--screenshots DIR]

For each page: no <script> that loads from the network, no widget view left to a widget manager,
no raw $$ in markdown; then headless Chromium, with every host unreachable, loads the page and
reports what it drew: each <math> must be laid out as math (CSS display "block math" or
"inline math", non-zero size) and each widget picture must decode (naturalWidth > 0).
--screenshots writes one PNG per page showing the cells of its first formula and first widgets.
Without chromium on the PATH the browser part is skipped (said so, exit status 0).
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  const report = {
    math: [...document.querySelectorAll("math")].map(m => ({display: getComputedStyle(m).display, size: box(m)})),
    images: [...document.querySelectorAll(".kt-widget-static img")].map(i => ({natural: i.naturalWidth, size: box(i)})),
    widgets: document.querySelectorAll(".kt-widget-static").length,
  };
  const pre = document.createElement("pre"); pre.id = "kt-probe"; pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
  if (location.hash === "#kt-show") {  // screenshot: only the cells of the first formula and the first widgets
    const shown = [document.querySelector("math"), ...document.querySelectorAll(".kt-widget-static")]
      .filter(Boolean).map(e => e.closest(".jp-Cell") || e).filter((c, i, all) => all.indexOf(c) === i).slice(0, 3);
    const main = document.querySelector("main") || document.body;
    main.replaceChildren(...shown); pre.remove();
  }
});
</script>"""


def static_problems(page: str) -> list[str]:
    problems = []
    if re.search(r'<script[^>]*\bsrc="https?://', page) or re.search(r'import\("https?://', page):
        problems.append("loads a script from the network")
    if "application/vnd.jupyter.widget-view+json" in page:
        problems.append("has a widget view that needs the widget manager")
    markdown = re.findall(r'jp-RenderedMarkdown.*?(?=<div class="jp-Cell |\Z)', page, re.S)
    if any("$$" in re.sub(r"<(code|pre)\b.*?</\1>", "", m, flags=re.S) for m in markdown):
        problems.append("has raw $$ math in a markdown cell")
    return problems


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def chromium(executable: str, url: str, *extra: str) -> str:
    command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180).stdout


def browser_problems(executable: str, path: Path, screenshots: Path | None) -> tuple[list[str], dict]:
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / path.name
        probe.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
        dom = chromium(executable, probe.as_uri(), "--dump-dom")
        match = re.search(r'<pre id="kt-probe">(.*?)</pre>', dom, re.S)
        if not match:
            return ["the browser produced no report (page failed to load?)"], {}
        report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        if screenshots is not None and (report["widgets"] or report["math"]):
            screenshots.mkdir(parents=True, exist_ok=True)
            chromium(executable, probe.as_uri() + "#kt-show", "--window-size=1100,1000",
                     f"--screenshot={(screenshots / path.with_suffix('.png').name).resolve()}")
    problems = [f"formula {i} not laid out as MathML ({m})" for i, m in enumerate(report["math"])
                if m["display"] not in ("block math", "inline math", "math") or 0 in m["size"]]
    problems += [f"widget picture {i} not drawn ({image})" for i, image in enumerate(report["images"])
                 if image["natural"] == 0 or 0 in image["size"]]
    return problems, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page")
    args = parser.parse_args(argv)
    executable = browser()
    failed = 0
    if executable is None:
        print(f"no headless browser ({', '.join(BROWSERS)}) on the PATH: browser check skipped "
              "(Debian: apt-get install chromium)")
    for path in args.pages:
        problems = static_problems(path.read_text(encoding="utf-8"))
        summary = ""
        if executable is not None:
            more, report = browser_problems(executable, path, args.screenshots)
            problems += more
            if report:
                summary = (f": {len(report['math'])} formulas as MathML, {report['widgets']} widgets, "
                           f"{len(report['images'])} widget pictures drawn")
        print(f"{path}: {'FAILED: ' + '; '.join(problems) if problems else 'ok'}{summary}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
