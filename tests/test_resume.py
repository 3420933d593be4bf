"""One checkpointable run state: a run killed and resumed writes the same logs as a straight run.

Every stateful option of a run (the rollback guard, each clipper, regulariser and constraint,
the carried state of a stream task, the watch's spike detector) is trained straight, and again
killed after a checkpoint and resumed: ``metrics.jsonl`` must be identical (losses bit for bit).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

import bptt.builders
from bptt import TrainConfig, train
from bptt.cli import main
from bptt.jsonio import read_jsonl
from bptt.remedies.clipping import CLIPPERS, make_clipper
from bptt.remedies.constraints import CONSTRAINTS
from bptt.remedies.regularizers import REGULARIZERS
from bptt.rundir import RunDirectory
from bptt.tasks import get_task

TINY = TrainConfig(
    task="adding", length=8, cell="rnn-tanh", hidden=6, steps=12, batch=4,
    eval_every=4, eval_size=8, checkpoint_every=5, diagnose_every=0, seed=2,
)
KILLED_AT = 8
"""The step after which the first run dies; its last checkpoint is at step 5."""


class Killed(Exception):
    """Stands for a crash (Ctrl-C, a lost machine) after a step was logged."""


def straight_and_resumed(config: TrainConfig, tmp_path: Path, killed_at: int = KILLED_AT) -> tuple[Path, Path]:
    """Train ``config`` straight, and killed after step ``killed_at`` then resumed."""
    train(config, tmp_path / "straight", progress=False)

    def kill(record):
        if record["step"] == killed_at:
            raise Killed

    with pytest.raises(Killed):
        train(config, tmp_path / "resumed", callbacks=[kill], progress=False)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    return tmp_path / "straight", tmp_path / "resumed"


def assert_same_metrics(straight: Path, resumed: Path) -> None:
    assert (resumed / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()


def _clip_spec(name: str) -> str:
    """A spec of every registered clipper: its defaults, or a value where it needs one."""
    try:
        make_clipper(name)
    except ValueError:
        return f"{name}:1"
    return name


OPTIONS = {
    "rollback": {"optimizer": "sgd", "lr": 30.0, "momentum": 0.0, "on_nonfinite": "rollback", "cell": "irnn"},
    **{f"clip-{name}": {"clip": _clip_spec(name), "steps": 30} for name in CLIPPERS.names()},
    **{f"regularizer-{name}": {"regularizer": name} for name in REGULARIZERS.names()},
    **{
        f"constraint-{name}": {"constraint": name, "cell": "indrnn" if name == "indrnn" else "rnn-tanh"}
        for name in CONSTRAINTS.names()
    },
    # a second optimizer group: expRNN's skew parameter at its own learning rate
    "exprnn-slow-lr": {"cell": "exprnn", "optimizer": "rmsprop", "lr": 1e-3, "slow_lr_factor": 0.5},
    **{f"cell-{name}": {"cell": name} for name in ("exprnn-cayley", "lem", "cornn")},
}


@pytest.mark.parametrize("changes", OPTIONS.values(), ids=OPTIONS.keys())
def test_a_killed_run_resumes_to_the_same_metrics(tmp_path, changes):
    config = TrainConfig(**{**TINY.to_dict(), **changes})
    killed_at = KILLED_AT if config.steps == TINY.steps else 27
    straight, resumed = straight_and_resumed(config, tmp_path, killed_at)
    assert_same_metrics(straight, resumed)
    if config.on_nonfinite == "rollback":  # rolled back after the checkpoint the resume starts from
        rolled = [r["step"] for r in read_jsonl(straight / "metrics.jsonl") if r.get("skipped_nonfinite")]
        assert any(step > config.checkpoint_every for step in rolled)


def test_a_stream_resumes_with_its_carried_state(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    config = TrainConfig(
        task="charlm", data=str(text), length=10, cell="gru", hidden=8, steps=12, batch=4,
        eval_every=4, eval_size=2, checkpoint_every=5, diagnose_every=0, seed=1,
    )
    assert get_task("charlm", 10, data=str(text)).chunks_per_epoch(config.batch) > config.steps
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert_same_metrics(straight, resumed)
    assert RunDirectory(resumed).load_checkpoint()["stream"]["carried"] is not None


def test_a_spike_after_the_resume_is_flagged_as_in_the_straight_run(tmp_path, monkeypatch):
    """The spike detector needs 20 losses in its window: resumed at step 25 without them, a
    spike at step 30 would pass unseen."""
    config = TrainConfig(**{**TINY.to_dict(), "steps": 32, "checkpoint_every": 25, "lr": 1e-3})
    generator = torch.Generator().manual_seed(config.seed)
    task = get_task(config.task, config.length)
    spiking = [task.sample(config.batch, generator).inputs for _ in range(30)][-1]  # step 30's batch
    real_get_task = bptt.builders.get_task

    def spiking_task(name, length, **options):
        task = real_get_task(name, length, **options)
        real_loss = task.loss

        def loss(prediction, batch):
            value = real_loss(prediction, batch)
            same = batch.inputs.shape == spiking.shape and torch.equal(batch.inputs, spiking)
            return value * 1000 if same else value

        task.loss = loss
        return task

    monkeypatch.setattr(bptt.builders, "get_task", spiking_task)
    straight, resumed = straight_and_resumed(config, tmp_path, killed_at=28)
    assert_same_metrics(straight, resumed)

    def spikes(run: Path) -> list[tuple[int, str, str]]:
        records = read_jsonl(run / "anomalies.jsonl")
        return [(r["step"], r["kind"], Path(r.get("capture", "")).name) for r in records]

    assert spikes(straight) == [(30, "loss-spike", "step-30.pt")]
    assert spikes(resumed) == spikes(straight)


ROLLBACK = [
    "adding", "--length", "20", "--cell", "irnn", "--hidden", "16", "--batch", "16", "--optimizer", "sgd",
    "--lr", "10", "--on-nonfinite", "rollback", "--eval-every", "4", "--eval-size", "32",
    "--checkpoint-every", "5", "--diagnose-every", "0", "--seed", "1", "--no-progress",
]


def test_a_rolled_back_run_stopped_and_continued_gives_the_same_curve(tmp_path):
    """Regression (issue 14, bug 1): straight, the loss at step 15 was 1.67; stopped at
    step 10 and continued, 7.2e30, because the guard's last good state was not saved."""

    def train_losses(run: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"}

    assert main(["train", *ROLLBACK, "--steps", "20", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *ROLLBACK, "--steps", "10", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", *ROLLBACK, "--steps", "20", "--out", str(tmp_path / "split"), "--resume"]) == 0
    straight, split = train_losses(tmp_path / "straight"), train_losses(tmp_path / "split")
    assert split == straight
    assert straight[15] < 10  # rolled back to the first weights: finite and small again


def test_checkpoints_load_with_weights_only(tmp_path):
    config = TrainConfig(**{**TINY.to_dict(), **OPTIONS["rollback"], "clip": "autoclip:50"})
    train(config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "clipper", "guard", "watch", "stream"} <= set(state)


def test_an_old_style_config_loads_and_resumes(tmp_path):
    """Configs of bptt 0.1.0 had clip_norm and clip_value: they read as the clip spec."""
    config = TrainConfig(**{**TINY.to_dict(), "clip": "norm:0.5"})
    train(TrainConfig(**{**config.to_dict(), "steps": 4}), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["clip"]
    (tmp_path / "run" / "config.json").write_text(json.dumps({**saved, "clip_norm": 0.5, "clip_value": None}))
    assert RunDirectory(tmp_path / "run").config() == TrainConfig(**{**config.to_dict(), "steps": 4})
    train(config, tmp_path / "run", resume=True, progress=False)
    train(config, tmp_path / "straight", progress=False)
    assert_same_metrics(tmp_path / "straight", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["clip"] == "norm:0.5"
    # the CLI's shorthand resumes it too
    argv = ["train", "--resume", "--out", str(tmp_path / "run"), "--steps", "14", "--no-progress"]
    assert main(argv) == 0


@pytest.mark.parametrize(
    "old,message",
    [({"clip_norm": 1.0, "clip_value": 1.0}, "choose one of clip"), ({"clip_norm": 1.0, "clip": "agc"}, "choose one")],
)
def test_old_clip_keys_that_contradict_are_explained(old, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({**TINY.to_dict(), **old})


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_follow_the_umask(tmp_path, umask, mode):
    """Regression (issue 14, bug 2): atomically written files came out 0600 whatever the umask."""
    previous = os.umask(umask)
    try:
        train(TrainConfig(**{**TINY.to_dict(), "steps": 2}), tmp_path / "run", progress=False)
    finally:
        os.umask(previous)
    for name in ("config.json", "summary.json", "checkpoint.pt", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == mode, name
