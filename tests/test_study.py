"""Studies: grid expansion, the SQLite record of every trial, re-runs, failures and interruptions."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest

import bptt.training as train_module
from bptt.cli import main
from bptt.store import ResultStore
from bptt.study import STORE, StudySpec, configuration, parse_list, run_study

TINY = {"hidden": 4, "batch": 4, "eval_every": 2, "eval_size": 8, "checkpoint_every": 2}


def tiny_spec(**changes) -> StudySpec:
    values = {"task": "adding", "lengths": (4, 6), "configs": ("rnn-tanh", "gru"), "clips": ("none", "norm:1"),
              "seeds": 1, "steps": 2, "base": TINY, "name": "tiny"}
    return StudySpec(**{**values, **changes})


def test_the_grid_is_every_configuration_clip_length_and_seed():
    spec = tiny_spec(configs=("rnn-tanh", "orthogonal", "irnn"), seeds=2)
    trials = spec.trials()
    assert len(trials) == 3 * 2 * 2 * 2
    assert {(t.cell, t.clip, t.length, t.seed) for t in trials} == {
        (cell, clip, length, seed)
        for cell in ("rnn-tanh", "ortho-rnn", "irnn") for clip in (None, "norm:1")
        for length in (4, 6) for seed in (0, 1)
    }
    assert all(t.lr == 3e-4 for t in trials if t.cell == "irnn")
    assert all(t.steps == 2 and t.hidden == 4 for t in trials)


def test_bad_names_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown configuration 'lstn'.*lstm"):
        configuration("lstn")
    with pytest.raises(ValueError, match="clip"):
        run_study(tiny_spec(clips=("nrm:1",)), tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="comma-separated list of int"):
        parse_list("50,x", int)


def test_a_spec_reads_from_toml(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('task = "adding"\nlengths = [4, 6]\nconfigs = ["gru"]\nsteps = 3\n[base]\nhidden = 4\n')
    spec = StudySpec.from_toml(path)
    assert spec.lengths == (4, 6) and spec.configs == ("gru",) and spec.base == {"hidden": 4}
    path.write_text('task = "adding"\nlenghts = [4]\n')
    with pytest.raises(ValueError, match=r"unknown study keys \['lenghts'\]"):
        StudySpec.from_toml(path)


def test_every_trial_is_a_run_recorded_in_the_store_and_a_rerun_skips_them(tmp_path):
    result = run_study(tiny_spec(), tmp_path, workers=1, progress=False)
    assert result.ran == 8 and len(result.trials) == 8
    for trial in result.trials:
        assert trial.status == "finished" and trial.attempts == 1
        assert (tmp_path / "trials" / trial.key / "summary.json").exists()
        summary = trial.summary
        assert {"solved", "solved_at", "metrics", "horizon", "nonfinite_steps", "wall_seconds"} <= set(summary)
        assert summary["spectral_norm_median"] > 0  # from the scheduled diagnosis
    again = run_study(tiny_spec(), tmp_path, workers=1, progress=False)
    assert again.ran == 0 and [t.attempts for t in again.trials] == [1] * 8
    assert "0/1" in again.table()


def test_a_crashing_trial_is_recorded_failed_and_retried(tmp_path, monkeypatch):
    original = train_module.train

    def flaky(config, out, **kwargs):
        if config.length == 6 and config.cell == "gru":
            raise RuntimeError("boom in the trial")
        return original(config, out, **kwargs)

    monkeypatch.setattr(train_module, "train", flaky)
    result = run_study(tiny_spec(), tmp_path, workers=1, progress=False)
    failed = [t for t in result.trials if t.status == "failed"]
    assert len(failed) == 2 and all("boom in the trial" in t.error for t in failed)
    assert sum(t.status == "finished" for t in result.trials) == 6
    assert "(1!)" in result.table()
    monkeypatch.setattr(train_module, "train", original)
    again = run_study(tiny_spec(), tmp_path, workers=1, progress=False)
    assert again.ran == 2
    assert all(t.status == "finished" for t in again.trials)
    assert sorted(t.attempts for t in again.trials) == [1] * 6 + [2] * 2


def test_a_trial_left_running_by_a_killed_study_is_run_again(tmp_path):
    spec = tiny_spec(lengths=(4,), clips=("none",))
    run_study(spec, tmp_path, workers=1, progress=False)
    with ResultStore(tmp_path / STORE) as store:
        key = store.trials()[0].key
        with store._write() as conn:  # what a study killed in the middle of a trial leaves
            conn.execute("UPDATE trials SET status = 'running' WHERE key = ?", (key,))
    again = run_study(spec, tmp_path, workers=1, progress=False)
    assert again.ran == 1
    assert {t.status for t in again.trials} == {"finished"}


def test_ctrl_c_leaves_the_store_consistent_and_a_rerun_finishes_the_rest(tmp_path):
    """Ctrl-C reaches the whole process group (driver and pool workers), as in a terminal."""
    command = [sys.executable, "-m", "bptt.cli", "study", "adding", "--lengths", "5,6,7,8,9,10",
               "--configs", "rnn-tanh", "--steps", "150", "--hidden", "8", "--batch", "8",
               "--workers", "2", "--no-progress", "--out", str(tmp_path)]
    study = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and study.poll() is None:  # until the first trial is done
        if (tmp_path / STORE).exists():
            with ResultStore(tmp_path / STORE) as store:
                if store.counts().get("finished", 0) >= 1:
                    break
        time.sleep(0.2)
    assert study.poll() is None, "the study ended before it could be interrupted"
    os.killpg(study.pid, signal.SIGINT)
    _, stderr = study.communicate(timeout=60)
    assert study.returncode == 130 and "run the same command again" in stderr, stderr
    with ResultStore(tmp_path / STORE) as store:
        trials = store.trials()
        assert store._read("PRAGMA integrity_check") == [("ok",)]
    assert "running" not in {t.status for t in trials}  # every claim released
    finished = {t.key for t in trials if t.status == "finished"}
    assert 1 <= len(finished) < 6
    assert all(t.error.startswith("interrupted") for t in trials if t.status == "failed")
    assert all((tmp_path / "trials" / key / "summary.json").exists() for key in finished)
    rest = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert rest.returncode in (0, 1), rest.stderr  # 1: finished, but a trial did not solve it
    with ResultStore(tmp_path / STORE) as store:
        trials = store.trials()
    assert {t.status for t in trials} == {"finished"}
    assert all(t.attempts == 1 for t in trials if t.key in finished)  # finished ones were kept


def test_a_process_pool_runs_the_grid(tmp_path):
    result = run_study(tiny_spec(configs=("rnn-tanh",), clips=("none",)), tmp_path, workers=2, progress=False)
    assert result.ran == 2 and {t.status for t in result.trials} == {"finished"}


def test_the_study_command_prints_the_success_table(tmp_path, capsys):
    argv = ["study", "adding", "--lengths", "4,6", "--configs", "rnn-tanh", "--clip", "none,norm:1",
            "--steps", "2", "--hidden", "4", "--batch", "4", "--workers", "1", "--no-progress",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "rnn-tanh clip norm:1" in out and "T=6" in out
    assert main(argv) == 0
    assert "ran 0 trials (4 already finished)" in capsys.readouterr().out
    assert main(["study", "adding", "--configs", "gru", "--out", str(tmp_path / "x")]) == 2
    assert "study needs --lengths" in capsys.readouterr().err


def test_ray_runs_the_grid_on_a_local_instance_limited_to_two_cpus(tmp_path):
    ray = importlib.import_module("ray")  # installed with the test extra
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = tiny_spec(configs=("rnn-tanh",), clips=("none", "norm:1"))
        result = run_study(spec, tmp_path, executor="ray", progress=False)
        assert ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()
    assert result.ran == 4 and {t.status for t in result.trials} == {"finished"}
    assert all((tmp_path / "trials" / t.key / "summary.json").exists() for t in result.trials)
    assert run_study(spec, tmp_path, executor="local", workers=1, progress=False).ran == 0


def test_an_unknown_executor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        run_study(tiny_spec(), tmp_path, executor="slurm")
