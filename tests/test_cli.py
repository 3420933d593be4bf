"""The `bptt` command line."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from bptt.cli import main
from bptt.cli.parser import add_model_flags, build_parser

TINY = ["--length", "8", "--hidden", "8", "--steps", "4", "--batch", "4", "--eval-every", "2",
        "--eval-size", "16", "--no-progress"]


def test_tasks_lists_every_task_with_its_baseline(capsys):
    assert main(["tasks", "--length", "50"]) == 0
    out = capsys.readouterr().out
    for name in ("adding", "copy", "temporal-order", "agreement"):
        assert name in out
    assert "0.1667" in out  # the adding problem's trivial baseline


def test_cells_lists_every_cell_with_its_options(capsys):
    from bptt.cells import CELLS

    assert main(["cells"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CELLS.names())
    assert "dt=0.06,gamma=66.0,epsilon=15.0" in out and "init=henaff" in out


def test_train_takes_cell_options_and_a_slow_learning_rate(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "adding", *TINY, "--cell", "lem:dt=0.05", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["cell"] == "lem:dt=0.05"
    run = tmp_path / "x"
    assert main(["train", "copy", *TINY, "--cell", "exprnn", "--slow-lr-factor", "0.5", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["slow_lr_factor"] == 0.5


def test_train_writes_a_run_and_gives_a_verdict(tmp_path, capsys):
    assert main(["train", "adding", *TINY, "--cell", "gru", "--clip-norm", "1", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "solved" in out and "trivial baseline" in out and "steps back" in out
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["cell"] == "gru" and config["clip"] == "norm:1" and config["steps"] == 4


def test_resume_takes_the_saved_config_and_new_steps(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "adding", *TINY, "--cell", "lstm", "--out", out]) == 0
    assert main(["train", "--resume", "--out", out, "--steps", "6", "--no-progress"]) == 0
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if json.loads(line)["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["steps"] == 6


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "adding", "--cell", "lstn"], "unknown cell 'lstn'.*Did you mean 'lstm'"),
        (["train", "addng"], "unknown task 'addng'.*Did you mean 'adding'"),
        (["train", "adding", "--init", "identiy"], "unknown init 'identiy'.*Did you mean 'identity'"),
        (["train", "adding", "--length", "0"], "length must be a positive integer"),
        (["train"], "train needs a TASK"),
        (["train", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_arguments_get_a_clear_error_and_exit_2(tmp_path, capsys, argv, message):
    full = argv if argv == ["train", "--resume"] else [*argv, *TINY[2:], "--out", str(tmp_path / "x")]
    assert main(full) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_existing_run_directory_exit_2_and_untouched(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "adding", *TINY, "--out", out]) == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert main(["train", "adding", *TINY, "--out", out]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before


def test_clip_norm_and_clip_value_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "adding", "--clip-norm", "1", "--clip-value", "1"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["demo"], ["tasks"]])
def test_help_explains_itself(command):
    result = subprocess.run(
        [sys.executable, "-m", "bptt.cli", *command, "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: bptt" in result.stdout
    if command == ["train"]:
        for flag in ("--length", "--cell", "--clip-norm", "--clip-value", "--init", "--resume", "--overwrite"):
            assert flag in result.stdout


def test_demo_compares_both_models(tmp_path, capsys):
    assert main(["demo", "--length", "6", "--steps", "4", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "trivial baseline MSE 0.167" in out
    for cell in ("rnn-tanh", "lstm"):
        assert (tmp_path / "demo" / cell / "summary.json").exists()
        assert any(line.startswith(cell) and "steps back" in line for line in out.splitlines())


def test_data_lists_every_data_set_and_whether_it_is_installed(capsys):
    assert main(["data"]) == 0
    printed = capsys.readouterr().out
    for name in ("mnist", "imdb", "rotten-tomatoes", "shakespeare"):
        assert name in printed
    assert "24,902 reviews" in printed and "70,000 images" in printed


def test_diagnose_takes_every_model_flag_that_train_takes(tmp_path, capsys):
    model = argparse.ArgumentParser()
    add_model_flags(model)
    flags = {flag for action in model._actions for flag in action.option_strings} - {"-h", "--help"}
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("train", "diagnose", "doctor"):
        accepted = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert flags <= accepted, name
    assert {"--constraint", "--residual", "--embedding"} <= flags
    out = tmp_path / "d.json"
    argv = ["diagnose", "--task", "adding", "--length", "6", "--hidden", "4", "--layers", "2", "--residual",
            "--constraint", "spectral:0.5", "--batch", "4", "--lyapunov", "2", "--out", str(out)]
    assert main(argv) == 0
    assert out.is_file()
