"""The training loop: run directory, determinism, resume, crash safety, non-finite guard."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import bptt.builders
import bptt.training
from bptt import TrainConfig, train
from bptt.builders import build_model
from bptt.jsonio import read_jsonl
from bptt.rundir import RunDirectory, RunDirectoryError

TINY = TrainConfig(
    task="adding", length=10, cell="rnn-tanh", hidden=8, steps=6, batch=4,
    eval_every=3, eval_size=16, checkpoint_every=3, seed=7,
)


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunDirectory(run_dir).metrics() if r["split"] == "train"]


def test_run_directory_holds_config_metrics_checkpoint_and_summary(tmp_path):
    result = train(TINY, tmp_path / "run", progress=False)
    run = RunDirectory(tmp_path / "run")
    assert run.config() == TINY
    records = run.metrics()
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["split"] == "validation"] == [3, 6]
    assert all({"loss", "grad_norm", "clipped", "lr"} <= set(r) for r in records if r["split"] == "train")
    assert run.load_checkpoint()["step"] == 6
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["solved"] == result.solved
    assert summary["baseline"] == pytest.approx(1 / 6, abs=1e-3)
    assert 0 <= result.horizon <= TINY.length - 1
    assert "trivial baseline" in result.verdict()


def test_same_seed_same_curve_other_seed_other_curve(tmp_path):
    train(TINY, tmp_path / "a", progress=False)
    train(TINY, tmp_path / "b", progress=False)
    train(TrainConfig(**{**TINY.to_dict(), "seed": 8}), tmp_path / "c", progress=False)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm"])
def test_resume_continues_the_same_curve(tmp_path, cell):
    config = TrainConfig(**{**TINY.to_dict(), "cell": cell})
    train(config, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**config.to_dict(), "steps": 3}), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def test_crash_leaves_last_checkpoint_and_resume_replays_from_it(tmp_path):
    train(TINY, tmp_path / "straight", progress=False)

    def crash(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "crashed", callbacks=[crash], progress=False)
    run = RunDirectory(tmp_path / "crashed")
    assert run.load_checkpoint()["step"] == 3
    assert not list((tmp_path / "crashed").glob("*.tmp"))
    train(TINY, tmp_path / "crashed", resume=True, progress=False)
    assert losses(tmp_path / "crashed") == losses(tmp_path / "straight")


def test_existing_run_directory_is_refused_unless_overwrite(tmp_path):
    train(TINY, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(RunDirectoryError, match="already exists.*--resume.*--overwrite"):
        train(TINY, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    train(TINY, tmp_path / "run", overwrite=True, progress=False)
    assert len(losses(tmp_path / "run")) == TINY.steps


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirectoryError, match="not a bptt run directory"):
        train(TINY, tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-a-checkpoint"])
def test_corrupt_checkpoint_gets_a_clear_error(tmp_path, damage):
    train(TrainConfig(**{**TINY.to_dict(), "steps": 3}), tmp_path / "run", progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    if damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    elif damage == "garbage":
        checkpoint.write_bytes(b"\x00not a zip file at all")
    else:
        torch.save({"weights": torch.zeros(2)}, checkpoint)
    before = {name: (tmp_path / "run" / name).read_text() for name in ("metrics.jsonl", "config.json")}
    with pytest.raises(RunDirectoryError, match="corrupt or truncated|not a bptt checkpoint"):
        train(TINY, tmp_path / "run", resume=True, progress=False)
    for name, text in before.items():
        assert (tmp_path / "run" / name).read_text() == text


def test_resume_with_a_different_config_is_refused(tmp_path):
    train(TINY, tmp_path / "run", progress=False)
    with pytest.raises(RunDirectoryError, match="hidden: saved 8, given 16"):
        train(TrainConfig(**{**TINY.to_dict(), "hidden": 16}), tmp_path / "run", resume=True, progress=False)


def test_bad_names_fail_before_anything_is_written(tmp_path):
    for field, value in (("task", "addng"), ("cell", "lstn"), ("init", "orthogonl")):
        with pytest.raises(ValueError, match="Did you mean"):
            train(TrainConfig(**{**TINY.to_dict(), field: value}), tmp_path / field, progress=False)
        assert not (tmp_path / field).exists()


def test_non_finite_steps_are_skipped_never_applied(tmp_path, monkeypatch):
    """A NaN loss must not reach the weights: the step is skipped and counted."""
    real_get_task = bptt.builders.get_task
    batches: list = []  # training batches in order; the watch's diagnostic pass reuses them

    def poisoned_get_task(name, length):
        task = real_get_task(name, length)
        real_loss = task.loss

        def loss(prediction, batch):
            value = real_loss(prediction, batch)
            if not prediction.requires_grad:  # evaluation
                return value
            if not any(batch is seen for seen in batches):
                batches.append(batch)
            index = next(i for i, seen in enumerate(batches) if seen is batch)
            return value * math.nan if index in (1, 3) else value

        task.loss = loss
        return task

    monkeypatch.setattr(bptt.builders, "get_task", poisoned_get_task)
    result = train(TINY, tmp_path / "run", progress=False)
    assert result.nonfinite_steps == 2
    records = [r for r in RunDirectory(tmp_path / "run").metrics() if r["split"] == "train"]
    assert [r["skipped_nonfinite"] for r in records] == [False, True, False, True, False, False]
    anomalies = read_jsonl(tmp_path / "run" / "anomalies.jsonl")
    assert [(a["step"], a["kind"], a["report"]["tensor"]) for a in anomalies] == [
        (2, "non-finite", "loss"),
        (4, "non-finite", "loss"),
    ]
    state = RunDirectory(tmp_path / "run").load_checkpoint()["model"]
    assert all(torch.isfinite(value).all() for value in state.values())


def test_clipping_is_recorded(tmp_path):
    config = TrainConfig(**{**TINY.to_dict(), "clip": "norm:1e-4"})
    train(config, tmp_path / "run", progress=False)
    records = [r for r in RunDirectory(tmp_path / "run").metrics() if r["split"] == "train"]
    assert all(r["clipped"] and r["grad_norm"] > 1e-4 for r in records)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_every_optimizer_and_schedule_learns_something(tmp_path, optimizer):
    config = TrainConfig(
        task="adding", length=5, cell="gru", hidden=16, steps=200, batch=32, eval_every=200,
        eval_size=256, optimizer=optimizer, lr={"sgd": 0.3, "adam": 0.03, "rmsprop": 0.01}[optimizer],
        schedule="cosine", warmup=5, weight_decay=1e-5,
    )
    result = train(config, tmp_path / optimizer, progress=False)
    assert result.metrics["mse"] < 0.5 * result.baseline


def test_lr_schedule_warms_up_then_decays():
    config = TrainConfig(steps=100, warmup=10, schedule="cosine")
    factors = [bptt.training.lr_factor(config, step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


@pytest.mark.parametrize(
    "values,match",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lr": -1.0}, "lr must be a positive finite number"),
        ({"optimizer": "adamw"}, "Did you mean 'adam'"),
    ],
)
def test_bad_config_values_are_explained(values, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**values)


def test_rollback_policy_keeps_weights_finite_and_lowers_the_learning_rate(tmp_path):
    """An SGD step of 1e30 overflows the weights: every such update is rolled back."""
    config = TrainConfig(
        **{**TINY.to_dict(), "optimizer": "sgd", "lr": 1e30, "momentum": 0.0, "on_nonfinite": "rollback"}
    )
    result = train(config, tmp_path / "run", progress=False)
    assert result.nonfinite_steps >= 1
    state = RunDirectory(tmp_path / "run").load_checkpoint()["model"]
    assert all(torch.isfinite(value).all() for value in state.values())
    rates = [r["lr"] for r in RunDirectory(tmp_path / "run").metrics() if r["split"] == "train"]
    assert rates[-1] < rates[0]


def test_unknown_nonfinite_policy_is_refused():
    with pytest.raises(ValueError, match="rollback"):
        TrainConfig(on_nonfinite="ignore")


@pytest.mark.parametrize("spec", ["autoclip:50", "zscore:2.0", "agc:0.05"])
def test_adaptive_clippers_resume_the_same_curve(tmp_path, spec):
    """The clipper's state (norm history, running statistics) is in the checkpoint."""
    config = TrainConfig(**{**TINY.to_dict(), "clip": spec})
    train(config, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**config.to_dict(), "steps": 3}), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    records = [r for r in RunDirectory(tmp_path / "straight").metrics() if r["split"] == "train"]
    assert all("clip_threshold" in r for r in records)


def test_a_bad_clip_spec_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="clipper"):
        train(TrainConfig(**{**TINY.to_dict(), "clip": "agx:1"}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"cell": "ortho-rnn"},
        {"cell": "lstm", "constraint": "cayley"},
        {"cell": "indrnn"},
        {"cell": "rnn-tanh", "constraint": "spectral:0.5"},
        {"cell": "skip-rnn:3", "layers": 2, "residual": True},
        {"cell": "rnn-tanh", "regularizer": "pascanu:1"},
        {"cell": "gru", "regularizer": "lyapunov:0.5"},
    ],
    ids=lambda changes: "-".join(str(v) for v in changes.values()),
)
def test_remedies_train_and_resume_the_same_curve(tmp_path, changes):
    """Constraints, regularisers and the new cells through the training loop: the constraint
    holds after training, a penalty is logged, and a resumed run repeats the curve."""
    config = TrainConfig(**{**TINY.to_dict(), **changes})
    train(config, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**config.to_dict(), "steps": 3}), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    model = build_model(config, bptt.builders.get_task(config.task, config.length))
    model.load_state_dict(RunDirectory(tmp_path / "straight").load_checkpoint()["model"])
    weight = model.recurrent.cells[0].weight_hh.detach()
    if changes.get("cell") == "ortho-rnn" or "constraint" in changes and changes["constraint"] == "cayley":
        blocks = weight.reshape(-1, config.hidden, config.hidden)
        eye = torch.eye(config.hidden)
        assert torch.linalg.matrix_norm(blocks.mT @ blocks - eye, ord=2).max() < 1e-5
    if changes.get("constraint") == "spectral:0.5":
        assert torch.linalg.matrix_norm(weight, ord=2) <= 0.5 + 1e-5
    if changes.get("cell") == "indrnn":
        assert weight.abs().max() <= 2 ** (1 / config.length) + 1e-6
    records = [r for r in RunDirectory(tmp_path / "straight").metrics() if r["split"] == "train"]
    assert all(("penalty" in r) == ("regularizer" in changes) for r in records)


def test_solved_at_is_the_first_solved_evaluation(tmp_path):
    result = train(TINY, tmp_path / "run", progress=False)
    task = bptt.builders.get_task(TINY.task, TINY.length)
    solved = [
        r["step"] for r in RunDirectory(tmp_path / "run").metrics()
        if r["split"] == "validation" and task.is_solved(r[task.metric_name])
    ]
    assert result.solved_at == (solved[0] if solved else None)
    # a task an untrained model solves at once: the first evaluation
    easy = TrainConfig(**{**TINY.to_dict(), "task": "adding", "length": 2, "steps": 300, "eval_every": 100, "lr": 0.01})
    result = train(easy, tmp_path / "easy", progress=False)
    assert result.solved and result.solved_at in (100, 200, 300)


def test_a_run_directory_opens_from_a_string_path(tmp_path):
    train(TINY, tmp_path / "run", progress=False)
    assert RunDirectory(str(tmp_path / "run")).config() == TINY
