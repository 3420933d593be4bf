"""The Lightning callback, in tiny Trainer runs on the CPU: its logs, its diagnoses against
bptt.diagnose, clipping at the optimizer step, the non-finite policies, the missing extra."""

from __future__ import annotations

import copy
import csv
import importlib
import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bptt
from bptt.integrations.lightning import BPTTCallback, unpack_default
from bptt.models import LastStepHead

STEPS, BATCH = 12, 8


def loader(batches: int = 6) -> DataLoader:
    """A tiny many-to-one regression: the sum of the first input channel, scaled."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batches * BATCH, STEPS, 2, generator=generator)
    targets = 0.3 * inputs[:, :, :1].sum(1)
    return DataLoader(TensorDataset(inputs, targets), batch_size=BATCH)


class TinyLSTM(pl.LightningModule):
    """An nn.LSTM regressor; ``poison_step``: that step's loss is NaN."""

    def __init__(self, poison_step: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm, self.head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 1)
        self.poison_step = poison_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        if self.global_step == self.poison_step:
            loss = loss * torch.tensor(math.nan)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(pl.Callback):
    """Copies of the gradients, weights and batch at each optimizer step, and the weights
    after each update."""

    def __init__(self) -> None:
        self.grads, self.weights, self.batches, self.updated = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append(
            [
                None if p.grad is None else p.grad.detach().clone()
                for p in pl_module.parameters()
            ]
        )
        self.weights.append(copy.deepcopy(pl_module.state_dict()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.updated.append(copy.deepcopy(pl_module.state_dict()))


def fit(
    tmp_path: Path,
    module: pl.LightningModule,
    *callbacks: pl.Callback,
    steps: int = 6,
    logger: pl.loggers.Logger | None = None,
    data: DataLoader | None = None,
    **options,
) -> pl.Trainer:
    """Fit ``module`` for ``steps`` steps on the CPU, logging every step (CSV by default)."""
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=logger or CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **options,
    )
    trainer.fit(module, data or loader())
    return trainer


def metrics(trainer: pl.Trainer) -> dict[int, dict[str, float]]:
    """The CSV logger's rows merged per step: step -> {name: value}."""
    rows: dict[int, dict[str, float]] = {}
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as file:
        for row in csv.DictReader(file):
            values = {k: float(v) for k, v in row.items() if v != "" and k != "step"}
            rows.setdefault(int(row["step"]), {}).update(values)
    return rows


@pytest.fixture(scope="module")
def clipped_run(tmp_path_factory):
    """Six steps clipped at norm 0.05 (below every gradient's), diagnosed every 2 steps."""
    before, after = Recorder(), Recorder()
    callback = BPTTCallback(every=2, clip="norm:0.05", loss_fn=nn.functional.mse_loss)
    trainer = fit(tmp_path_factory.mktemp("run"), TinyLSTM(), before, callback, after)
    return trainer, callback, before, after


def test_metrics_and_records_reach_the_logger_and_the_log_dir(clipped_run):
    trainer, callback, _, _ = clipped_run
    logged = metrics(trainer)
    assert sorted(logged) == [0, 1, 2, 3, 4, 5]
    for step, values in logged.items():
        assert values["bptt/clipped"] == 1.0
        assert values["bptt/clip_threshold"] == pytest.approx(0.05)
        assert values["bptt/grad_norm"] > 0.05
        assert values["bptt/nonfinite_steps"] == 0.0
        diagnosed = "bptt/lstm.l0/horizon" in values
        assert diagnosed == (step % 2 == 0)
    for name in (
        "verdict",
        "decay_rate",
        "spectral_norm_median",
        "lyapunov_max",
        "profile_d1",
        "profile_d11",
    ):
        assert f"bptt/lstm.l0/{name}" in logged[2]
    assert [r["step"] for r in callback.diagnoses] == [0, 2, 4]
    assert callback.anomalies == []
    lines = (
        (Path(trainer.log_dir) / "bptt" / "diagnostics.jsonl").read_text().splitlines()
    )
    assert len(lines) == 3


def test_the_logged_diagnosis_is_bptt_diagnose_on_the_same_batch_and_weights(
    clipped_run,
):
    trainer, callback, before, _ = clipped_run
    step = 2
    module = TinyLSTM()
    module.load_state_dict(before.weights[step])
    x, y = before.batches[step]
    expected = bptt.diagnose(
        module, x, y, nn.functional.mse_loss, products=False
    ).layers[0]
    logged = metrics(trainer)[step]
    record = callback.diagnoses[1]["layers"][0]
    assert record["name"] == "lstm.l0"
    assert expected.horizon is not None
    assert logged["bptt/lstm.l0/horizon"] == expected.horizon == record["horizon"]
    assert logged["bptt/lstm.l0/decay_rate"] == pytest.approx(
        expected.decay_rate, rel=1e-6
    )
    assert logged["bptt/lstm.l0/spectral_norm_median"] == pytest.approx(
        expected.median_step_norm, rel=1e-6
    )
    assert logged["bptt/lstm.l0/lyapunov_max"] == pytest.approx(
        float(expected.lyapunov[0]), rel=1e-5, abs=1e-7
    )
    torch.testing.assert_close(torch.tensor(record["profile"]), expected.profile)
    profile = expected.profile
    for d in (1, 2, 4, 8, 11):
        assert logged[f"bptt/lstm.l0/profile_d{d}"] == pytest.approx(
            float(profile[-1 - d] / profile[-1]), rel=1e-5
        )
    assert "bptt/lstm.l0/profile_d3" not in logged


def test_norm_clipping_bounds_the_gradient_the_optimizer_sees_and_keeps_its_direction(
    clipped_run,
):
    trainer, _, before, after = clipped_run
    logged = metrics(trainer)
    assert len(before.grads) == len(after.grads) == 6
    for step, (raw, clipped) in enumerate(zip(before.grads, after.grads, strict=True)):
        raw, clipped = (
            torch.cat([g.flatten() for g in raw]),
            torch.cat([g.flatten() for g in clipped]),
        )
        assert raw.norm() > 0.05
        assert clipped.norm() <= 0.05 * (1 + 1e-6)
        assert torch.nn.functional.cosine_similarity(
            raw, clipped, dim=0
        ) == pytest.approx(1.0, abs=1e-6)
        assert logged[step]["bptt/grad_norm"] == pytest.approx(
            float(raw.norm()), rel=1e-5
        )
        assert logged[step]["bptt/grad_norm_clipped"] == pytest.approx(
            float(clipped.norm()), rel=1e-5
        )


def test_clip_and_gradient_clip_val_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="gradient_clip_val"):
        fit(tmp_path, TinyLSTM(), BPTTCallback(clip="value:1"), gradient_clip_val=1.0)


def test_a_nan_loss_is_reported_and_its_update_skipped(tmp_path):
    recorder = Recorder()
    callback = BPTTCallback(
        every=0, loss_fn=nn.functional.mse_loss
    )  # on_nonfinite="skip"
    with pytest.warns(
        UserWarning, match="non-finite loss or gradient at step 1.*skipped"
    ):
        trainer = fit(tmp_path, TinyLSTM(poison_step=1), callback, recorder, steps=3)
    assert [(r["step"], r["kind"]) for r in callback.anomalies] == [(1, "non-finite")]
    assert "parameter gradient" in callback.anomalies[0]["message"]
    for name, weight in recorder.updated[
        1
    ].items():  # the poisoned step changed nothing
        torch.testing.assert_close(weight, recorder.weights[1][name], rtol=0, atol=0)
    assert (
        recorder.updated[0]["head.weight"].ne(recorder.updated[2]["head.weight"]).any()
    )
    assert all(torch.isfinite(w).all() for w in recorder.updated[-1].values())
    logged = metrics(trainer)
    assert logged[1]["bptt/anomaly/non-finite"] == 1.0
    assert [logged[s]["bptt/nonfinite_steps"] for s in range(3)] == [0.0, 1.0, 1.0]
    assert (Path(trainer.log_dir) / "bptt" / "captures" / "step-1.pt").is_file()


def test_warn_applies_the_nan_update_and_raise_stops_training(tmp_path):
    recorder = Recorder()
    warn = BPTTCallback(every=0, loss_fn=nn.functional.mse_loss, on_nonfinite="warn")
    with pytest.warns(UserWarning, match="applied"):
        fit(tmp_path / "warn", TinyLSTM(poison_step=1), warn, recorder, steps=2)
    assert not torch.isfinite(recorder.updated[1]["head.weight"]).all()
    stop = BPTTCallback(every=0, loss_fn=nn.functional.mse_loss, on_nonfinite="raise")
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(tmp_path / "raise", TinyLSTM(poison_step=1), stop, steps=3)
    assert stop.anomalies[0]["kind"] == "non-finite"


class SequenceRegressor(pl.LightningModule):
    """A bptt SequenceModel (an unrolled Elman stack) inside a LightningModule."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = bptt.SequenceModel(
            bptt.Recurrent.from_name("rnn-tanh", 2, 8), LastStepHead(8, 1)
        )

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model(x, lengths)

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self(batch.inputs, batch.lengths), batch.targets)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_a_bptt_model_with_bptt_batches_is_watched_and_tensorboard_gets_text_and_figures(
    tmp_path,
):
    task = bptt.tasks.get_task("adding", STEPS)
    generator = torch.Generator().manual_seed(0)
    batches = [task.sample(BATCH, generator) for _ in range(2)]
    callback = BPTTCallback(every=1, clip="autoclip:10")
    fit(
        tmp_path,
        SequenceRegressor(),
        callback,
        steps=2,
        logger=TensorBoardLogger(tmp_path),
        data=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch),
    )
    assert [r["step"] for r in callback.diagnoses] == [0, 1]
    layer = callback.diagnoses[0]["layers"][0]
    assert layer["name"] == "model.recurrent.l0"
    expected = bptt.diagnose(
        SequenceRegressor(), batches[0].inputs, batches[0].targets, products=False
    )
    assert layer["horizon"] == expected.layers[0].horizon

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()
    assert "bptt/profile" in tags["images"]
    assert "bptt/verdict/text_summary" in tags["tensors"]
    assert "bptt/model.recurrent.l0/horizon" in tags["scalars"]
    resumed = BPTTCallback(
        clip="autoclip:10"
    )  # AutoClip's history goes into checkpoints
    resumed.load_state_dict(callback.state_dict())
    assert len(callback.clipper.norms) == 2
    torch.testing.assert_close(resumed.clipper.norms, callback.clipper.norms)


class LongMemoryRegressor(pl.LightningModule):
    """A bptt long-memory cell in a LightningModule, its optimizer built from parameter groups."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = bptt.SequenceModel(bptt.Recurrent.from_name(cell, 2, 8), LastStepHead(8, 1))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self(batch.inputs, batch.lengths), batch.targets)

    def configure_optimizers(self):
        return torch.optim.RMSprop(bptt.parameter_groups(self, 1e-2))


@pytest.mark.parametrize("cell", ["exprnn", "lem", "cornn"])
def test_the_long_memory_cells_train_and_are_diagnosed_under_lightning(tmp_path, cell):
    task = bptt.tasks.get_task("adding", STEPS)
    generator = torch.Generator().manual_seed(0)
    batches = [task.sample(BATCH, generator) for _ in range(2)]
    module = LongMemoryRegressor(cell)
    callback = BPTTCallback(every=1)
    trainer = fit(
        tmp_path, module, callback, steps=2,
        data=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch),
    )  # fmt: skip
    rates = [group["lr"] for group in trainer.optimizers[0].param_groups]
    assert rates == ([1e-2, pytest.approx(1e-3)] if cell == "exprnn" else [1e-2])
    assert [r["step"] for r in callback.diagnoses] == [0, 1]
    assert callback.diagnoses[-1]["layers"][0]["horizon"] >= 1


def test_unpack_default_names_the_way_out_for_other_batches():
    x, y = torch.zeros(2, 3, 1), torch.zeros(2, 1)
    assert unpack_default([x, y, "extra"]) == (x, y, None)
    with pytest.raises(TypeError, match="unpack_batch"):
        unpack_default({"x": x, "y": y})


def test_missing_lightning_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "bptt.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install bptt\[lightning\]"):
        importlib.import_module("bptt.integrations.lightning")


def test_import_bptt_does_not_import_lightning():
    code = "import sys, bptt, bptt.integrations; print(any(m.startswith('lightning') for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
