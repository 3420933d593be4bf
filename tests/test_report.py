"""Reports: every figure is written as PNG and SVG, and the HTML page embeds images that decode."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from xml.etree import ElementTree

import matplotlib.image
import pytest

from bptt import TrainConfig, train
from bptt.cli import main
from bptt.report import report
from bptt.rundir import read_jsonl
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
                         diagnose_every=4, clip_norm=0.01)
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
