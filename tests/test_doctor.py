"""The doctor: rules from a diagnosis to ranked cures, the A/B test and its recommendation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from bptt import TrainConfig, diagnose
from bptt.cells import make_cell
from bptt.cli import main
from bptt.doctor import (
    Cure,
    Examination,
    Trial,
    doctor,
    estimated_horizon,
    examine,
    findings,
    format_trials,
    prescribe,
    recommend,
    try_cures,
)
from bptt.recurrent import Recurrent
from bptt.rundir import RunDirectory
from bptt.training import RunResult, train

TINY = TrainConfig(
    task="adding", length=12, cell="rnn-tanh", hidden=8, steps=8, batch=8,
    eval_every=4, eval_size=32, checkpoint_every=4, diagnose_every=0, seed=3,
)


def examination_of(
    cell: str, scale: float, norms=(1.0, 2.0, 3.0, 100.0), nonfinite=0.0, *, many_to_many: bool = False
) -> Examination:
    """A real diagnosis of a one-layer ``cell`` whose W_hh is ``scale`` times the identity, with a
    loss on the last step (or, ``many_to_many``, on every step, as copy memory's)."""
    torch.manual_seed(0)
    model = Recurrent.from_name(cell, 2, 6)
    with torch.no_grad():
        hidden = model.cells[0].hidden_size
        model.cells[0].weight_hh.copy_(scale * torch.eye(hidden).repeat(model.cells[0].num_gates, 1))
    x = torch.rand(40, 4, 2)
    if many_to_many:
        y, forward = torch.rand(40, 4, 6), lambda m, i, lengths: m(i)[0]
    else:
        y, forward = torch.rand(4, 6), lambda m, i, lengths: m(i)[0][-1]
    diagnosis = diagnose(model, x, y, forward=forward, products=False)
    return Examination("test", diagnosis, torch.tensor(norms, dtype=torch.float64), nonfinite)


LONG_MEMORY = ("exprnn", "lem", "cornn")


def test_vanishing_elman_gets_gated_cells_irnn_and_orthogonality_with_reasons():
    examination = examination_of("rnn-tanh", 0.3)
    assert examination.diagnosis.verdict.kind == "vanishing"
    config = TrainConfig(task="adding", length=40, cell="rnn-tanh")
    cures = prescribe(config, examination)
    names = [cure.name for cure in cures]
    assert {"gru", "lstm", "irnn", "ortho-rnn", "pascanu:1"} <= set(names)
    layer = examination.diagnosis.layers[0]
    assert all(cure.apply(config) != config for cure in cures)
    measured = findings(config, examination)
    assert measured.startswith("vanishing") and f"reaches {layer.horizon} of 40 steps back" in measured
    assert f"‖W_hh‖₂ {layer.recurrent_norm:.3g}" in measured
    assert "median 2.5 (max 100) over 4 steps" in measured
    # gated cells first; unsaturated units: the small W_hh is the cause, orthogonality before IRNN
    assert names[:2] == ["gru", "lstm"]
    assert layer.saturation < 0.05 and names.index("ortho-rnn") < names.index("irnn")


def test_a_cure_that_changes_nothing_is_left_out():
    examination = examination_of("rnn-tanh", 0.3)
    config = TrainConfig(task="adding", length=40, cell="gru")  # already gated: not offered again
    assert "gru" not in [cure.name for cure in prescribe(config, examination)]


def test_exploding_gets_clipping_at_the_median_observed_norm_first():
    examination = examination_of("rnn-relu", 1.5)
    assert examination.diagnosis.verdict.kind == "exploding"
    config = TrainConfig(task="adding", length=40, cell="rnn-relu")
    cures = prescribe(config, examination)
    assert cures[0].name == "clip-norm:2.5"
    assert cures[0].changes["clip"] == "norm:2.5"  # median of 1, 2, 3, 100
    assert "the median of 4 observed norms (1 to 100)" in cures[0].reason
    assert {"ortho-rnn", "spectral:1", "lyapunov:0.1"} <= {cure.name for cure in cures}  # λ₁ = log 1.5 > 0
    assert cures[0].apply(config).clip == "norm:2.5"


def test_non_finite_gradients_alone_count_as_exploding():
    examination = examination_of("rnn-tanh", 0.9, nonfinite=0.25)
    cures = prescribe(TrainConfig(task="adding", length=40), examination)
    assert cures[0].name.startswith("clip-norm")
    assert "25% non-finite" in findings(TrainConfig(task="adding", length=40), examination)
    assert "rollback" in [cure.name for cure in cures]


def test_vanishing_gated_cell_gets_chrono_first():
    examination = examination_of("lstm", 0.1)
    if examination.diagnosis.verdict.kind != "vanishing":
        pytest.fail(f"expected a vanishing LSTM, got {examination.diagnosis.verdict}")
    cures = prescribe(TrainConfig(task="adding", length=40, cell="lstm"), examination)
    assert [cure.name for cure in cures][:2] == ["chrono", "forget-bias"]
    assert "mean forget gate" in cures[0].reason
    # the gradient reaches 5 of 40 steps: not long range, no long-memory cell
    assert examination.diagnosis.layers[0].horizon * 10 >= 40
    assert not set(LONG_MEMORY) & {cure.name for cure in cures}


@pytest.mark.parametrize(
    ("task", "ranking"), [("copy", ["exprnn", "lem", "cornn"]), ("adding", ["lem", "cornn", "exprnn"])]
)
def test_vanishing_gated_cell_at_long_range_gets_the_long_memory_cells_first(task, ranking):
    examination = examination_of("lstm", 0.1)
    layer = examination.diagnosis.layers[0]
    assert examination.diagnosis.verdict.kind == "vanishing" and layer.horizon == 5
    config = TrainConfig(task=task, length=1000, cell="lstm", init="chrono")
    cures = prescribe(config, examination)
    names = [cure.name for cure in cures]
    # a memory task gets expRNN's norm-preserving recurrence first, the adding problem LEM
    assert names[:4] == [*ranking, "forget-bias"]  # chrono is already there
    reasons = {cure.name: cure.reason for cure in cures}
    assert "‖J_t‖ = 1" in reasons["exprnn"] and "modReLU" in reasons["exprnn"]
    assert "orthogonal" in reasons["exprnn"]
    assert "multiscale" in reasons["lem"] and "learned time steps" in reasons["lem"]
    assert "oscillators" in reasons["cornn"] and "bounded by construction" in reasons["cornn"]
    assert all("the gradient reaches 5 of 1000 steps back" in reasons[name] for name in LONG_MEMORY)
    for name in LONG_MEMORY:  # the new cell's own init and constraint, not the LSTM's chrono
        changed = cures[names.index(name)].apply(config)
        assert (changed.cell, changed.init, changed.constraint) == (name, None, None)


def test_vanishing_elman_at_long_range_gets_the_long_memory_cells_after_the_gated_ones():
    examination = examination_of("rnn-tanh", 0.3)
    names = [cure.name for cure in prescribe(TrainConfig(task="copy", length=500, cell="rnn-tanh"), examination)]
    assert names[:5] == ["gru", "lstm", "exprnn", "lem", "cornn"]
    assert names[5:7] == ["ortho-rnn", "irnn"]  # unsaturated: orthogonality before IRNN, as at short range
    short = [cure.name for cure in prescribe(TrainConfig(task="copy", length=40, cell="rnn-tanh"), examination)]
    assert not set(LONG_MEMORY) & set(short)


def test_many_to_many_reach_is_extrapolated_from_the_decay_rate():
    examination = examination_of("lstm", 0.1, many_to_many=True)
    layer = examination.diagnosis.layers[0]
    assert layer.horizon is None and 0 < layer.decay_rate < 1
    reach = estimated_horizon(layer)
    assert reach == pytest.approx(math.log(1e-3) / math.log(layer.decay_rate))  # r^d = 10^-3
    assert 1 < reach < 50
    config = TrainConfig(task="copy", length=1000, cell="lstm")
    cures = prescribe(config, examination)
    assert [cure.name for cure in cures][:3] == ["exprnn", "lem", "cornn"]
    assert f"the gradient reaches about {reach:.0f} of 1000 steps back" in findings(config, examination)
    assert f"the gradient reaches about {reach:.0f} of 1000 steps back" in cures[0].reason
    assert estimated_horizon(dataclasses.replace(layer, decay_rate=1.2)) == math.inf


def test_healthy_gets_optimisation_advice():
    examination = examination_of("rnn-relu", 1.0)  # positive inputs: J_t = I, nothing fades
    if examination.diagnosis.verdict.kind != "healthy":
        pytest.fail(f"expected a healthy network, got {examination.diagnosis.verdict}")
    cures = prescribe(TrainConfig(task="adding", length=40, steps=100), examination)
    assert cures[0].changes == {"steps": 200}


def result(value: float, solved_at: int | None, steps: int = 100) -> RunResult:
    return RunResult(
        run_dir=Path("x"), steps=steps, metrics={"mse": value}, metric_name="mse",
        baseline=1 / 6, solved_threshold=0.01, solved=solved_at is not None, horizon=5,
        decay_rate=0.9, nonfinite_steps=0, solved_at=solved_at,
    )


def test_recommend_prefers_the_cure_that_solves_soonest():
    trials = [
        Trial("baseline", {}, result(0.16, None), 1.0),
        Trial("slow", {"cell": "lstm"}, result(0.001, 900), 1.0),
        Trial("fast", {"cell": "gru"}, result(0.005, 300), 1.0),
        Trial("close", {"cell": "irnn"}, result(0.02, None), 1.0),
    ]
    chosen = recommend(trials)
    assert chosen.trial.name == "fast"
    assert "solved the task at step 300" in chosen.sentence and "baseline did not" in chosen.sentence
    table = format_trials(trials)
    assert table.splitlines()[3].split()[:4] == ["slow", "0.001", "yes", "900"]


def test_recommend_without_a_solution_takes_the_best_metric_or_nothing():
    trials = [Trial("baseline", {}, result(0.16, None), 1.0), Trial("a", {}, result(0.1, None), 1.0)]
    assert recommend(trials).trial.name == "a" and "no arm solved" in recommend(trials).sentence
    worse = [Trial("baseline", {}, result(0.1, None), 1.0), Trial("a", {}, result(math.nan, None), 1.0)]
    assert recommend(worse).trial is None


def test_try_cures_uses_the_same_budget_and_seed(tmp_path):
    cures = [Cure("gru", {"cell": "gru"}, "because")]
    trials = try_cures(TINY, cures, tmp_path)
    assert [t.name for t in trials] == ["baseline", "gru"]
    assert all(t.result.steps == TINY.steps for t in trials)
    baseline_config = json.loads((tmp_path / "baseline" / "config.json").read_text())
    cure_config = json.loads((tmp_path / "gru" / "config.json").read_text())
    assert {k for k in baseline_config if baseline_config[k] != cure_config[k]} == {"cell"}


def test_try_cures_a_long_memory_cell_builds_it_with_its_own_init(tmp_path):
    long_range = TrainConfig(task="adding", length=1000, cell="lstm", init="chrono")
    cure = prescribe(long_range, examination_of("lstm", 0.1))[0]
    assert cure.name == "lem"
    baseline = dataclasses.replace(TINY, cell="lstm", init="chrono")
    trials = try_cures(baseline, [cure], tmp_path)
    assert [t.name for t in trials] == ["baseline", "lem"] and trials[1].result.steps == TINY.steps
    assert math.isfinite(trials[1].result.metrics["mse"])
    saved = RunDirectory(tmp_path / "lem").config()
    assert {k for k, v in saved.to_dict().items() if v != baseline.to_dict()[k]} == {"cell", "init"}
    model = RunDirectory(tmp_path / "lem").load_model()[0]
    assert type(model.recurrent.cells[0]) is type(make_cell("lem", 2, 8))


def test_examine_a_fresh_model_and_a_run(tmp_path):
    fresh = examine(TINY)
    assert fresh.gradient_norms.numel() == 32 and fresh.nonfinite_fraction == 0
    train(TINY, tmp_path / "run", progress=False)
    run = examine(TINY, tmp_path / "run")
    assert run.gradient_norms.numel() == TINY.steps  # the logged ones
    assert "at step 8" in run.source


def test_doctor_end_to_end_writes_json(tmp_path):
    report = doctor(TINY, tmp_path / "doc", tries=1)
    saved = json.loads((tmp_path / "doc" / "doctor.json").read_text())
    assert saved["verdict"]["kind"] == report.examination.diagnosis.verdict.kind
    assert [t["name"] for t in saved["trials"]] == ["baseline", report.cures[0].name]
    assert saved["recommendation"]["sentence"] == report.recommendation.sentence
    with pytest.raises(ValueError, match="non-negative"):
        doctor(TINY, tmp_path / "bad", tries=-1)


def test_cli_doctor_fresh_and_from_a_run(tmp_path, capsys):
    flags = ["--length", "12", "--hidden", "8", "--steps", "6", "--batch", "8", "--eval-every", "3",
             "--eval-size", "32", "--diagnose-every", "0", "--no-progress"]
    assert main(["doctor", "--task", "adding", *flags, "--try", "1", "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    assert "cures, best first" in printed and "A/B test" in printed and "arm" in printed
    assert (tmp_path / "d" / "doctor.json").exists()
    assert main(["train", "adding", *flags, "--out", str(tmp_path / "run")]) == 0
    assert main(["doctor", str(tmp_path / "run"), "--out", str(tmp_path / "d2")]) == 0
    assert "at step 6" in capsys.readouterr().out
    assert main(["doctor", str(tmp_path / "run"), "--task", "adding"]) == 2
