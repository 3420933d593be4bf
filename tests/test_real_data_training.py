"""Training on real and user data: truncated BPTT over a stream, test metrics, --data, sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import bptt.training
from bptt import TrainConfig, train
from bptt.builders import build_model, make_task
from bptt.cli import main
from bptt.generate import generate
from bptt.rundir import RunDirectory
from bptt.tasks import Batch
from bptt.training import evaluate_stream

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def reviews_csv(tmp_path):
    rows = ["text,label"]
    for i in range(60):
        rows.append(f"a wonderful lovely film number {i},good")
        rows.append(f"a dreadful boring film number {i},bad")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def charlm_config(text_file, **changes) -> TrainConfig:
    values = {
        "task": "charlm", "data": str(text_file), "length": 12, "cell": "lstm", "hidden": 16, "steps": 8,
        "batch": 4, "eval_every": 4, "eval_size": 4, "checkpoint_every": 4, "diagnose_every": 0, "seed": 3,
    }
    return TrainConfig(**{**values, **changes})


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunDirectory(run_dir).metrics() if r["split"] == "train"]


def test_chunks_carrying_the_state_equal_one_pass_over_the_whole_sequence(text_file):
    config = charlm_config(text_file)
    task = make_task(config)
    torch.manual_seed(0)
    model = build_model(config, task).double()
    ids = task.streams["train"][:30].unsqueeze(0)
    whole, _ = model.forward_with_state(ids)
    first, state = model.forward_with_state(ids[:, :12])
    second, _ = model.forward_with_state(ids[:, 12:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_stream_evaluation_scores_every_token_from_all_text_before_it(text_file):
    config = charlm_config(text_file)
    task = make_task(config)
    torch.manual_seed(0)
    model = build_model(config, task).double()
    scored = evaluate_stream(model, task, "validation", streams=1)
    stream = task.streams["validation"]
    with torch.no_grad():
        logits = model(stream[:-1].unsqueeze(0))
    expected = torch.nn.functional.cross_entropy(logits[0], stream[1:]).item()
    assert scored["cross_entropy"] == pytest.approx(expected, rel=1e-9)
    assert scored["bpc"] == pytest.approx(expected / math.log(2), rel=1e-9)


def test_truncated_bptt_resumes_the_same_curve_with_the_carried_state(text_file, tmp_path):
    config = charlm_config(text_file)
    train(config, tmp_path / "straight", progress=False)
    train(TrainConfig(**{**config.to_dict(), "steps": 4}), tmp_path / "split", progress=False)
    assert RunDirectory(tmp_path / "split").load_checkpoint()["stream"]["carried"] is not None
    train(config, tmp_path / "split", resume=True, progress=False)
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")


def test_the_state_is_carried_between_chunks(text_file, tmp_path, monkeypatch):
    seen = []
    original = build_model

    def spy(config, task):
        model = original(config, task)
        forward = model.forward_with_state

        def recording(inputs, state=None, lengths=None):
            seen.append(state)
            return forward(inputs, state, lengths)

        model.forward_with_state = recording
        return model

    monkeypatch.setattr(bptt.training, "build_model", spy)
    config = charlm_config(text_file, steps=3, eval_every=100)
    task = make_task(config)
    train(config, tmp_path / "run", progress=False)
    training = seen[:3]  # then evaluation and the final test pass
    assert training[0] is None  # the first chunk starts from zero
    assert task.chunks_per_epoch(config.batch) > 3
    for state in training[1:]:  # later chunks continue from the previous one, detached
        assert state is not None and not any(s.requires_grad for s in state)


def test_real_data_runs_report_test_metrics(reviews_csv, tmp_path):
    config = TrainConfig(
        task="sentiment", data=str(reviews_csv), length=8, cell="gru", hidden=8, steps=30,
        batch=16, lr=1e-2, eval_every=15, eval_size=50, diagnose_every=0,
    )
    result = train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["test_metrics"]) == {"accuracy", "cross_entropy"}
    assert summary["test_metrics"]["accuracy"] == result.test_metrics["accuracy"]
    assert "test" in result.verdict()
    assert result.test_metrics["accuracy"] > 0.9  # "wonderful/lovely" vs "dreadful/boring"


def test_synthetic_runs_have_no_test_split(tmp_path):
    config = TrainConfig(task="adding", length=6, hidden=4, steps=2, batch=4, eval_every=2, eval_size=8)
    assert train(config, tmp_path / "run", progress=False).test_metrics is None


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"task": "adding", "data": "x.csv"}, "task 'adding' does not take a data file"),
        ({"task": "digits", "task_options": {"limt": 3}}, r"does not take the options \['limt'\].*split_seed"),
        ({"task": "digits", "length": 10}, "must divide the 64 pixels"),
        ({"task": "adding", "embedding": 8}, "applies to token inputs"),
    ],
)
def test_bad_task_settings_fail_before_anything_is_written(tmp_path, changes, message):
    config = TrainConfig(**{"steps": 2, "batch": 4, "eval_size": 8, **changes})
    with pytest.raises(ValueError, match=message):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_trains_on_a_users_csv_and_text_file(reviews_csv, text_file, tmp_path, capsys):
    tiny = ["--hidden", "8", "--steps", "4", "--batch", "4", "--eval-every", "2", "--eval-size", "8", "--no-progress"]
    assert main(["train", "--data", str(reviews_csv), "--length", "8", *tiny, "--out", str(tmp_path / "csv")]) == 0
    assert json.loads((tmp_path / "csv" / "config.json").read_text())["task"] == "sentiment"
    assert main(["train", "--data", str(text_file), "--length", "10", "--cell", "gru", *tiny,
                 "--option", "target_bpc=2.5", "--out", str(tmp_path / "txt")]) == 0
    config = json.loads((tmp_path / "txt" / "config.json").read_text())
    assert config["task"] == "charlm" and config["task_options"] == {"target_bpc": 2.5}
    assert "solved at 2.5" in capsys.readouterr().out


def test_cli_trains_on_npz_arrays_and_refuses_a_bad_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "good.npz", x=x, y=(x[:, 0, 0] > 0).astype(np.int64))
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros(39, dtype=np.int64))
    tiny = ["--hidden", "4", "--steps", "2", "--batch", "4", "--eval-every", "2", "--no-progress"]
    assert main(["train", "--data", str(tmp_path / "good.npz"), *tiny, "--out", str(tmp_path / "a")]) == 0
    assert "arrays (length 5)" in capsys.readouterr().out  # the file's T, not the default length
    assert main(["train", "--data", str(tmp_path / "bad.npz"), *tiny, "--out", str(tmp_path / "b")]) == 2
    assert "one row per sequence (40)" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    argv = ["train", "--data", str(tmp_path / "good.npz"), "--length", "9", *tiny, "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "its sequences have T = 5 steps" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["diagnose", "--data", str(tmp_path / "good.npz"), "--hidden", "4", "--batch", "4",
                 "--out", str(tmp_path / "d.json")]) == 0  # the task follows from the file, as for train
    assert json.loads((tmp_path / "d.json").read_text())["meta"]["steps"] == 5
    assert main(["diagnose", "--out", str(tmp_path / "e.json")]) == 2
    assert "diagnose needs RUN_DIR, or --task NAME or --data FILE" in capsys.readouterr().err


def test_cli_rejects_a_file_of_unknown_kind_and_a_malformed_option(tmp_path, capsys):
    (tmp_path / "data.json").write_text("{}")
    assert main(["train", "--data", str(tmp_path / "data.json"), "--out", str(tmp_path / "r")]) == 2
    assert "expected .csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "digits", "--option", "limit"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_sample_continues_a_prompt_reproducibly(text_file, tmp_path, capsys):
    train(charlm_config(text_file, steps=40, eval_every=20, lr=1e-2), tmp_path / "lm", progress=False)
    argv = ["sample", str(tmp_path / "lm"), "--prompt", "the quick", "--length", "30", "--seed", "1"]
    capsys.readouterr()  # the training's evaluation lines
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("the quick") and len(first.rstrip("\n")) == len("the quick") + 30


def test_sample_refuses_a_run_that_is_not_a_language_model(tmp_path, capsys):
    config = TrainConfig(task="adding", length=6, hidden=4, steps=2, batch=4, eval_every=2, eval_size=8)
    train(config, tmp_path / "run", progress=False)
    assert main(["sample", str(tmp_path / "run")]) == 2
    assert "does not generate text" in capsys.readouterr().err


def test_generate_greedy_follows_the_most_likely_token(text_file):
    config = charlm_config(text_file)
    task = make_task(config)
    torch.manual_seed(0)
    model = build_model(config, task)
    text = generate(model, task.tokenizer, "the", 5, temperature=0)
    ids = task.tokenizer.encode("the")
    expected = []
    for _ in range(5):
        logits = model(torch.tensor([ids + expected]))[0, -1]
        logits[:2] = -math.inf  # never <pad> or <unk>
        expected.append(int(logits.argmax()))
    assert text == task.tokenizer.decode(expected)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, task.tokenizer, "", 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, task.tokenizer, "a", 5, temperature=-1)


def test_the_probe_of_a_language_model_is_its_last_prediction(text_file):
    task = make_task(charlm_config(text_file))
    batch = Batch(torch.tensor([[2, 3, 4]]), torch.tensor([[3, 4, 5]]))
    prediction = torch.randn(1, 3, task.vocab_size)
    expected = torch.nn.functional.cross_entropy(prediction[:, -1], batch.targets[:, -1])
    torch.testing.assert_close(task.probe_loss(prediction, batch), expected)


def test_diagnose_shows_the_reach_into_a_users_reviews(reviews_csv, tmp_path, capsys):
    argv = ["diagnose", "--task", "sentiment", "--data", str(reviews_csv), "--length", "8", "--hidden", "8",
            "--batch", "8", "--lyapunov", "2", "--out", str(tmp_path / "d.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reach (top layer)" in out and "of the median sequence" in out


def test_tasks_lists_the_real_data_tasks_without_loading_them(capsys, monkeypatch):
    monkeypatch.setattr("bptt.tasks.text.load_reviews", lambda *a, **k: pytest.fail("loaded reviews"))
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("sentiment", "charlm", "smnist", "pmnist", "digits", "arrays"):
        assert name in out
