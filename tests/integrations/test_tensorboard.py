"""`--tensorboard`: the run's records, read back from the event files, are the run's own numbers."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bptt import TrainConfig, train
from bptt.cli import main
from bptt.diagnostics.profile import relative_by_distance
from bptt.jsonio import read_jsonl

CONFIG = TrainConfig(task="adding", length=10, hidden=8, steps=12, batch=8, eval_every=6, eval_size=16,
                     diagnose_every=6, clip="norm:0.5")


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def test_scalars_profiles_and_figures_match_the_run_directory(tmp_path):
    train(CONFIG, tmp_path / "run", progress=False, tensorboard=True)
    board = events(tmp_path / "run")
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in metrics if r["split"] == "train"]
    assert scalars(board, "train/loss") == pytest.approx({r["step"]: r["loss"] for r in steps}, rel=1e-6)
    assert scalars(board, "train/grad_norm") == pytest.approx({r["step"]: r["grad_norm"] for r in steps}, rel=1e-6)
    assert scalars(board, "train/clipped") == {r["step"]: float(r["clipped"]) for r in steps}
    evaluations = [r for r in metrics if r["split"] == "validation"]
    assert scalars(board, "validation/mse") == pytest.approx({r["step"]: r["mse"] for r in evaluations}, rel=1e-6)
    diagnoses = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")
    name = diagnoses[0]["layers"][0]["name"]
    assert scalars(board, f"diagnosis/{name}/horizon") == {r["step"]: r["layers"][0]["horizon"] for r in diagnoses}
    for distance in (1, 2, 4, 8, 9):
        expected = {r["step"]: float(relative_by_distance(r["layers"][0]["profile"])[distance]) for r in diagnoses}
        assert scalars(board, f"diagnosis/{name}/profile_d{distance}") == pytest.approx(expected, rel=1e-6)
    assert [image.step for image in board.Images(f"profile/{name}")] == [6, 12]


def test_anomalies_are_logged_as_text(tmp_path):
    config = replace(CONFIG, optimizer="sgd", lr=1e30, momentum=0.0, clip=None, steps=4, diagnose_every=0)
    train(config, tmp_path / "run", progress=False, tensorboard=True)
    anomalies = read_jsonl(tmp_path / "run" / "anomalies.jsonl")
    assert anomalies and anomalies[0]["kind"] == "non-finite"
    board = events(tmp_path / "run")
    texts = board.Tensors("anomalies/text_summary")
    assert len(texts) == len(anomalies)
    assert "non-finite" in texts[0].tensor_proto.string_val[0].decode()


def test_without_tensorboard_the_flag_is_refused_before_the_run_directory_exists(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'bptt\[tensorboard\]'"):
        main(["train", "adding", "--length", "5", "--steps", "2", "--out", str(tmp_path / "run"), "--tensorboard"])
    assert not (tmp_path / "run").exists()
