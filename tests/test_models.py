"""Heads, embeddings and whole models on variable-length batches."""

from __future__ import annotations

import pytest
import torch

from bptt import (
    LastStepHead,
    PerStepHead,
    Recurrent,
    SequenceModel,
    TrainConfig,
    build_model,
)
from bptt.tasks import get_task


def test_last_step_head_reads_each_sequences_last_valid_step():
    outputs = torch.arange(2 * 4 * 3, dtype=torch.float64).view(2, 4, 3)
    head = LastStepHead(3, 1).double()
    lengths = torch.tensor([2, 4])
    expected = head.linear(torch.stack([outputs[0, 1], outputs[1, 3]]))
    torch.testing.assert_close(head(outputs, lengths), expected)
    torch.testing.assert_close(head(outputs, None), head.linear(outputs[:, -1]))


def test_many_to_one_model_ignores_padding_in_loss_and_gradients():
    torch.manual_seed(0)
    recurrent = Recurrent.from_name("gru", 4, 6, 2)
    model = SequenceModel(recurrent, LastStepHead(6, 3), vocab_size=10).double()
    tokens = torch.randint(1, 10, (3, 8))
    lengths = torch.tensor([8, 5, 2])
    targets = torch.tensor([0, 2, 1])
    noisy = tokens.clone()
    for b, length in enumerate(lengths):
        noisy[b, length:] = torch.randint(1, 10, (8 - length,))

    def loss_and_grads(inputs):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs, lengths), targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(tokens), loss_and_grads(noisy)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-12, rtol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_many_to_many_model_gives_per_step_logits():
    model = SequenceModel(Recurrent.from_name("lstm", 5, 7), PerStepHead(7, 11), vocab_size=11)
    logits = model(torch.randint(0, 11, (2, 9)))
    assert logits.shape == (2, 9, 11)


@pytest.mark.parametrize(
    "tokens,match",
    [
        (torch.tensor([[1, 2, 12]]), r"\[0, 10\).*from 1 to 12"),
        (torch.tensor([[1.0, 2.0]]), "integer tensor of shape"),
        (torch.tensor([1, 2]), "integer tensor of shape"),
    ],
)
def test_bad_token_ids_are_explained(tokens, match):
    model = SequenceModel(Recurrent.from_name("gru", 4, 4), LastStepHead(4, 2), vocab_size=10)
    with pytest.raises(ValueError, match=match):
        model(tokens)


@pytest.mark.parametrize("task_name", ["adding", "copy", "temporal-order", "agreement"])
@pytest.mark.parametrize("cell", ["rnn-tanh", "irnn", "gru", "lstm"])
def test_build_model_fits_every_task(task_name, cell):
    task = get_task(task_name, 12)
    config = TrainConfig(task=task_name, length=12, cell=cell, hidden=8)
    model = build_model(config, task)
    batch = task.sample(3, torch.Generator().manual_seed(0))
    loss = task.loss(model(batch.inputs, batch.lengths), batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_irnn_starts_from_the_identity():
    task = get_task("adding", 10)
    model = build_model(TrainConfig(cell="irnn", hidden=6), task)
    cell = model.recurrent.cells[0]
    torch.testing.assert_close(cell.weight_hh.detach(), torch.eye(6))
    assert cell.nonlinearity == "relu" and torch.all(cell.bias_hh == 0)
