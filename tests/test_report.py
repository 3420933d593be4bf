"""Reports: every figure is written as PNG and SVG, and the HTML page embeds images that decode."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from xml.etree import ElementTree

import matplotlib.image
import pytest

from bptt import TrainConfig, train
from bptt.cli import main
from bptt.jsonio import read_jsonl
from bptt.report import report
from bptt.study import StudySpec, run_study


class Page(HTMLParser):
    """Collects the images and captions of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_caption = tag == "figcaption"

    def handle_data(self, data):
        if self._in_caption and data.strip():
            self.captions.append(data.strip())

    def handle_endtag(self, tag):
        self._in_caption = False


def check_page(page, names):
    parser = Page()
    parser.feed(page.read_text(encoding="utf-8"))
    assert len(parser.images) == len(names) == len(parser.captions)
    for source in parser.images:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(source[len(prefix):])), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    for name in names:
        assert (page.parent / "figures" / f"{name}.png").stat().st_size > 1000
        ElementTree.parse(page.parent / "figures" / f"{name}.svg")  # well-formed SVG
    return parser


def test_a_run_report_shows_curves_profiles_and_spectra(tmp_path):
    config = TrainConfig(task="adding", length=8, hidden=8, steps=8, batch=8, eval_every=4, eval_size=16,
                         diagnose_every=4, clip="norm:0.01")
    train(config, tmp_path / "run", progress=False)
    page = report(tmp_path / "run")
    assert page == tmp_path / "run" / "report" / "report.html"
    parser = check_page(page, ["training", "profile", "profile-heatmap", "step-norms", "spectra"])
    assert any("clipped steps" in caption for caption in parser.captions)
    last = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")[-1]["layers"][-1]
    assert last["spans"][-1] == 7 and len(last["product_norms"]) == len(last["spans"])  # products, last only


def test_a_study_report_shows_success_rates(tmp_path, capsys):
    spec = StudySpec(task="adding", lengths=(4, 6), configs=("rnn-tanh", "gru"), steps=4,
                     base={"hidden": 4, "batch": 4, "eval_every": 2, "eval_size": 8}, name="tiny")
    run_study(spec, tmp_path / "study", workers=1, progress=False)
    assert main(["report", str(tmp_path / "study"), "--out", str(tmp_path / "out")]) == 0
    assert "report.html" in capsys.readouterr().out
    check_page(tmp_path / "out" / "report.html", ["success", "longest-solved", "profiles"])


def test_a_directory_that_is_neither_is_refused(tmp_path):
    with pytest.raises(ValueError, match="neither a run directory"):
        report(tmp_path)
    assert not (tmp_path / "report").exists()


# Loaded first in the page: records every script error and every resource that fails to
# load; once the page has loaded, draws every image on a canvas (a full decode) and writes
# its size and number of distinct colours as JSON into <pre id="bptt-check">, which
# `chromium --dump-dom` prints. Synchronous on purpose: the DOM is dumped when the page's
# virtual time runs out, which does not wait for asynchronous decoding.
PROBE = """<script>
window.bpttErrors = [];
window.addEventListener("error", (event) => window.bpttErrors.push(
  event.message || "failed to load " + String(event.target.src || event.target.href).slice(0, 60)), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((image) => {
    if (!image.complete || image.naturalWidth === 0) return [0, 0, 0];
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const pixels = new Uint32Array(context.getImageData(0, 0, canvas.width, canvas.height).data.buffer);
    return [canvas.width, canvas.height, new Set(pixels).size];
  });
  const out = document.createElement("pre");
  out.id = "bptt-check";
  out.textContent = JSON.stringify({images: images, errors: window.bpttErrors});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The headless browser: $BPTT_CHROMIUM, or Debian's chromium (which .ci/run installs)."""
    names = [os.environ.get("BPTT_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    found = next((path for path in map(shutil.which, filter(None, names)) if path), None)
    if found is None:
        pytest.fail("the report's browser test needs Chromium: `apt-get install chromium` (Debian; "
                    ".ci/run installs it when missing), or set BPTT_CHROMIUM to a Chrome binary")
    return found


def render(page, tmp_path):
    """Open ``page`` (with the probe) in headless Chromium; the probe's JSON outcome."""
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=10000", "--dump-dom", probed.resolve().as_uri()]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="bptt-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the page did not finish loading in Chromium:\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_reports_load_in_headless_chromium_and_every_image_decodes(tmp_path):
    config = TrainConfig(task="adding", length=8, hidden=8, steps=8, batch=8, eval_every=4, eval_size=16,
                         diagnose_every=4)
    train(config, tmp_path / "run", progress=False)
    run_page = report(tmp_path / "run")
    spec = StudySpec(task="adding", lengths=(4, 6), configs=("rnn-tanh", "gru"), steps=4,
                     base={"hidden": 4, "batch": 4, "eval_every": 2, "eval_size": 8}, name="tiny")
    run_study(spec, tmp_path / "study", workers=1, progress=False)
    study_page = report(tmp_path / "study")
    svgs = sorted((run_page.parent / "figures").glob("*.svg")) + sorted((study_page.parent / "figures").glob("*.svg"))
    gallery = tmp_path / "svgs.html"  # the SVG files, as a browser shows them
    sources = [f"data:image/svg+xml;base64,{base64.b64encode(svg.read_bytes()).decode()}" for svg in svgs]
    gallery.write_text("<!DOCTYPE html><html><head></head><body>"
                       + "".join(f'<img src="{source}">' for source in sources) + "</body></html>")
    for page, count in ((run_page, 5), (study_page, 3), (gallery, 8)):
        outcome = render(page, tmp_path)
        assert outcome["errors"] == [], f"{page}: {outcome['errors']}"
        assert len(outcome["images"]) == count
        for width, height, colours in outcome["images"]:
            assert width > 300 and height > 200 and colours > 10, outcome["images"]  # decoded, not blank


def test_the_browser_check_catches_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head></head><body><img src="data:image/png;base64,AAAA"></body></html>')
    outcome = render(page, tmp_path)
    assert outcome["images"] == [[0, 0, 0]] and "failed to load" in outcome["errors"][0]
