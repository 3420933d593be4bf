"""Watching a loop: detectors, scheduled diagnoses, captures and their replay."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import bptt
from bptt import TrainConfig, train
from bptt.cli import main
from bptt.diagnostics import LossSpikeDetector, OscillationDetector
from bptt.diagnostics.watching import load_capture
from bptt.jsonio import read_jsonl
from bptt.replay import replay


def test_spike_detector_flags_a_jump_but_not_noise():
    generator = torch.Generator().manual_seed(0)
    detector = LossSpikeDetector(window=50, threshold=6.0)
    noise = 1.0 + 0.05 * torch.randn(200, generator=generator)
    assert all(detector.update(float(v)) is None for v in noise)
    assert detector.update(3.0) > 6.0
    assert detector.update(1.01) is None
    restored = LossSpikeDetector(window=50)
    restored.load_state_dict(detector.state_dict())
    assert restored.score(3.0) == pytest.approx(detector.score(3.0))


def test_oscillation_detector_flags_alternation_not_a_noisy_descent():
    detector = OscillationDetector(window=40)
    generator = torch.Generator().manual_seed(1)
    descent = torch.linspace(2, 1, 100) + 0.01 * torch.randn(100, generator=generator)
    assert not any(detector.update(float(v)) for v in descent)
    swinging = [1.0 + 0.5 * (-1) ** i for i in range(40)]
    assert [detector.update(v) for v in swinging][-1]


def user_loop(tmp_path, steps=6, every=2, poison_step=None):
    """A plain PyTorch loop with an nn.LSTM, watched."""
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 8, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1]).squeeze(-1)

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    task = bptt.tasks.get_task("adding", 20)
    generator = torch.Generator().manual_seed(0)
    loss_fn = nn.functional.mse_loss
    applied = []
    with bptt.watch(model, every=every, out=tmp_path, loss_fn=loss_fn) as watcher:
        for step in range(1, steps + 1):
            batch = task.sample(8, generator)
            x, y = batch.inputs, batch.targets.squeeze(-1)
            if step == poison_step:
                x = x.clone()
                with torch.no_grad():
                    model.lstm.weight_hh_l0[3, 0] = math.inf
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if watcher.observe(step, loss, x, y):
                optimizer.step()
                applied.append(step)
            if step == poison_step:
                with torch.no_grad():
                    model.lstm.weight_hh_l0[3, 0] = 0.0
    return watcher, applied


def test_watch_records_diagnoses_on_schedule(tmp_path):
    _, applied = user_loop(tmp_path, steps=6, every=2)
    assert applied == [1, 2, 3, 4, 5, 6]
    records = read_jsonl(tmp_path / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[0]["layers"][0]["name"] == "lstm.l0"
    assert len(records[0]["layers"][0]["profile"]) == 20
    assert records[0]["verdict"] in {"vanishing", "healthy", "exploding"}


def test_products_are_measured_on_their_own_schedule(tmp_path):
    torch.manual_seed(0)
    model = nn.LSTM(2, 4)
    watcher = bptt.Watch(model, every=2, loss_fn=lambda out, y: out[0][-1].sum(), products_at=lambda s: s == 4)
    x = torch.randn(6, 3, 2)
    for step in (2, 4):
        model.zero_grad()
        model(x)[0][-1].sum().backward()
        watcher.observe(step, 1.0, x, x)
    spans = [record["layers"][0]["spans"] for record in watcher.diagnoses]
    assert spans[0] == [] and spans[1][0] == 1 and spans[1][-1] == 5
    assert len(watcher.diagnoses[1]["layers"][0]["product_norms"]) == len(spans[1])


def test_a_watch_restored_from_a_state_dict_flags_what_the_original_flags(tmp_path):
    """A resumed run's watch, restored from a checkpoint, sees the next losses as the watch of a
    run that never stopped: the same spike, oscillation and (capped) non-finite records."""
    model = nn.LSTM(2, 4)
    x = torch.zeros(5, 3, 2)
    generator = torch.Generator().manual_seed(0)
    swinging = (1.0 + 0.3 * (-1) ** torch.arange(110) + 0.05 * torch.randn(110, generator=generator)).tolist()
    before, after = swinging[:60], swinging[60:]
    before[30] = math.nan  # localised: the only one max_captures=1 allows
    after[10:12] = [5.0, math.nan]

    def make() -> bptt.Watch:
        return bptt.Watch(model, every=0, loss_fn=lambda out, y: out[0][-1].sum(), max_captures=1)

    def feed(watcher: bptt.Watch, losses: list[float], start: int) -> list[tuple]:
        seen = len(watcher.anomalies)
        for step, loss in enumerate(losses, start):
            watcher.observe(step, loss, x, x, grad_norm=1.0)
        return [(r["step"], r["kind"], r["message"]) for r in watcher.anomalies[seen:]]

    original = make()
    assert [kind for _, kind, _ in feed(original, before, 0)] == ["non-finite", "oscillation"]
    torch.save(original.state_dict(), tmp_path / "watch.pt")
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "watch.pt", weights_only=True))
    expected = feed(original, after, len(before))
    assert [kind for _, kind, _ in expected] == ["loss-spike"]  # still oscillating: not flagged again
    assert feed(resumed, after, len(before)) == expected
    assert resumed.state_dict() == original.state_dict()
    fresh = make()  # without the state: no spike (still warming up), one more non-finite step localised
    assert [kind for _, kind, _ in feed(fresh, after, len(before))] == ["non-finite"]


def test_watch_localises_a_non_finite_step_skips_it_and_captures_it(tmp_path):
    _, applied = user_loop(tmp_path, steps=4, every=0, poison_step=3)
    assert applied == [1, 2, 4]
    (anomaly,) = read_jsonl(tmp_path / "anomalies.jsonl")
    assert anomaly["kind"] == "non-finite" and anomaly["step"] == 3
    assert anomaly["report"]["tensor"] == "activation" and anomaly["report"]["layer"] == "lstm.l0"
    capture = load_capture(anomaly["capture"])
    assert math.isinf(capture["model"]["lstm.weight_hh_l0"][3, 0])


def test_train_captures_a_non_finite_step_and_replay_reproduces_it(tmp_path, capsys):
    config = TrainConfig(
        task="adding", length=30, cell="rnn-relu", hidden=16, steps=5, batch=8,
        optimizer="sgd", lr=1e30, momentum=0.0, eval_every=5, eval_size=16, diagnose_every=2,
    )
    result = train(config, tmp_path / "run", progress=False)
    assert result.nonfinite_steps >= 1
    anomalies = [a for a in read_jsonl(tmp_path / "run" / "anomalies.jsonl") if a["kind"] == "non-finite"]
    assert anomalies and all("capture" in a for a in anomalies)
    outcome = replay(anomalies[0]["capture"])
    assert outcome.reproduced
    anywhen = {"training_step": None}
    assert outcome.diagnosis.nonfinite.to_dict() | anywhen == anomalies[0]["report"] | anywhen
    assert main(["replay", anomalies[0]["capture"]]) == 0
    assert "reproduced: yes" in capsys.readouterr().out
    diagnosed = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")
    assert all(r["step"] % 2 == 0 for r in diagnosed)


def test_cli_diagnose_run_dir_and_fresh_model(tmp_path, capsys):
    config = TrainConfig(task="adding", length=20, cell="gru", hidden=8, steps=2, batch=4, eval_every=2, eval_size=8)
    train(config, tmp_path / "run", progress=False)
    assert main(["diagnose", str(tmp_path / "run"), "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "recurrent.l0" in out and "verdict:" in out
    saved = json.loads((tmp_path / "run" / "diagnosis.json").read_text())
    assert saved["layers"][0]["cell"] == "GRU" and len(saved["layers"][0]["profile"]) == 20

    target = tmp_path / "fresh.json"
    code = main(
        ["diagnose", "--task", "adding", "--cell", "irnn", "--length", "30", "--hidden", "16", "--out", str(target)]
    )
    assert code == 0 and json.loads(target.read_text())["verdict"]["kind"] == "healthy"


def test_cli_diagnose_needs_one_source(capsys):
    assert main(["diagnose"]) == 2
    assert "diagnose needs RUN_DIR, or --task NAME or --data FILE" in capsys.readouterr().err


def test_a_loss_spike_is_captured_and_replayed_from_a_user_loop(tmp_path):
    torch.manual_seed(0)
    model = nn.GRU(2, 6)
    loss_fn = lambda out, y: (out[0][-1].sum(-1) - y).pow(2).mean()
    task = bptt.tasks.get_task("adding", 15)
    generator = torch.Generator().manual_seed(0)
    watcher = bptt.Watch(model, every=0, out=tmp_path, loss_fn=loss_fn)
    for step in range(1, 41):
        batch = task.sample(8, generator)
        x, y = batch.inputs.transpose(0, 1), batch.targets.squeeze(-1)
        if step == 35:
            y = y + 50.0  # a batch with wild targets: a real spike of the loss
        loss = loss_fn(model(x), y)
        model.zero_grad()
        loss.backward()
        assert watcher.observe(step, loss, x, y)
    (spike,) = [a for a in watcher.anomalies if a["kind"] == "loss-spike"]
    assert spike["step"] == 35 and spike["z"] > 6
    outcome = replay(spike["capture"], model=nn.GRU(2, 6), loss_fn=loss_fn)
    assert outcome.reproduced and outcome.diagnosis.loss == pytest.approx(spike["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="pass the model"):
        replay(spike["capture"])


def test_oscillation_detector_is_silent_on_noisy_losses():
    """A noisy but level loss (as on the adding problem) must not read as oscillation."""
    generator = torch.Generator().manual_seed(2)
    detector = OscillationDetector()
    noise = 0.17 * (1 + 0.3 * torch.randn(5000, generator=generator))
    assert not any(detector.update(float(v)) for v in noise)


def test_mild_alternation_in_a_descending_loss_is_not_oscillation():
    """Regression: 40 training losses of the demo's LSTM (adding, length 50, steps 1060-1099).

    Their changes have a lag-1 autocorrelation of -0.80, but only 74 % of them flip sign
    (67 % for pure noise): the detector used to flag windows like this one.
    """
    losses = [
        0.005, 0.0084, 0.0074, 0.0046, 0.0057, 0.0062, 0.0052, 0.0054, 0.0056, 0.0051,
        0.0066, 0.0055, 0.0072, 0.0088, 0.012, 0.0059, 0.0137, 0.0074, 0.0161, 0.0075,
        0.0118, 0.0064, 0.0085, 0.0048, 0.0124, 0.0065, 0.0067, 0.0076, 0.0078, 0.0089,
        0.0053, 0.0092, 0.0075, 0.0068, 0.0113, 0.0048, 0.0085, 0.0048, 0.0092, 0.0099,
    ]
    detector = OscillationDetector()
    assert not any(detector.update(v) for v in losses)
    strict = OscillationDetector()
    assert [strict.update(0.0075 + 0.004 * (-1) ** i) for i in range(40)][-1]


def test_replay_and_watch_explain_bad_input(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.pt")]) == 2
    assert "no capture at" in capsys.readouterr().err
    not_a_capture = tmp_path / "notes.pt"
    not_a_capture.write_text("hello")
    assert main(["replay", str(not_a_capture)]) == 2
    assert "not a readable bptt capture" in capsys.readouterr().err
    with pytest.raises(ValueError, match="every must be a non-negative integer"):
        bptt.Watch(nn.GRU(2, 3), every=-1)
