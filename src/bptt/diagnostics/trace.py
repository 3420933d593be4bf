"""The diagnostic pass: run a model with every recurrent layer unrolled and taped.

Works on any ``nn.Module`` that contains :class:`bptt.Recurrent` layers or torch's fused
:class:`torch.nn.RNN` / :class:`torch.nn.GRU` / :class:`torch.nn.LSTM`. A fused torch module
is run, for the duration of the pass only, by an unrolled :class:`bptt.Recurrent` twin whose
cells hold the module's own parameter objects: the same weights, the same outputs, the
gradients flowing into the same parameters, and nothing of the module changed afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import final

import torch
from torch import nn

from bptt.cells import TORCH_MODES, AbstractCell
from bptt.gradient_profile import GradientProfile
from bptt.recurrent import LayerTape, Recurrent

__all__ = ["TapedLayer", "module_label", "profiling", "recurrent_modules", "taping", "unrolled_twin"]


@final
@dataclass
class TapedLayer:
    """One recurrent layer seen by the diagnostic pass.

    Attributes:
        name: ``"<module path>.l<layer>"``, e.g. ``"recurrent.l0"`` or ``"encoder.lstm.l1"``.
        tape: what the layer computed (filled by the forward pass).
    """

    name: str
    tape: LayerTape


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The :class:`bptt.Recurrent` and ``torch.nn.RNNBase`` modules inside ``model``, by path.

    Raises:
        ValueError: if there is none, or a torch module is bidirectional or projected.
    """
    found = []
    for name, module in model.named_modules():
        if isinstance(module, Recurrent | nn.RNNBase):
            if isinstance(module, nn.RNNBase):
                _check_supported(name, module)
            found.append((name or "model", module))
    if not found:
        raise ValueError(
            f"found no recurrent layer in {type(model).__name__}: diagnostics need a "
            "bptt.Recurrent or a torch.nn.RNN / GRU / LSTM inside the model"
        )
    return found


def unrolled_twin(module: nn.RNNBase) -> Recurrent:
    """A :class:`bptt.Recurrent` computing exactly what ``module`` computes, sharing its weights.

    The twin's cells hold the very parameter objects of ``module`` (``weight_ih_l0`` becomes
    ``cells[0].weight_ih``, ...), so gradients reach the module's parameters and no weight
    is copied. A parametrised weight (e.g. an orthogonal constraint) is shared as the
    tensor the parametrisation computes now: build the twin inside
    :func:`torch.nn.utils.parametrize.cached` so that it is the one the module uses. The
    twin follows the module's ``batch_first``, ``dropout`` and training mode.

    Raises:
        ValueError: if ``module`` is bidirectional or projected (``proj_size``).
    """
    _check_supported("", module)
    cells = []
    for layer in range(module.num_layers):
        input_size = module.input_size if layer == 0 else module.hidden_size
        with torch.device("meta"):
            cell = _twin_cell(module.mode, input_size, module.hidden_size, module.bias)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if not hasattr(module, f"{name}_l{layer}"):
                continue
            value = getattr(module, f"{name}_l{layer}")
            if not isinstance(value, nn.Parameter):  # parametrised: a computed tensor
                delattr(cell, name)
            setattr(cell, name, value)
        cells.append(cell)
    twin = Recurrent(cells, batch_first=module.batch_first, dropout=module.dropout)
    return twin.train(module.training)


@contextlib.contextmanager
def taping(model: nn.Module) -> Iterator[list[TapedLayer]]:
    """Tape every recurrent layer of ``model`` during the forward passes inside the block.

    Layers appear in the order they run. Torch modules are routed through their
    :func:`unrolled_twin` inside the block only; their ``forward`` is restored on exit.

    Example::

        with taping(model) as layers:
            loss = loss_fn(model(x), y)
        deltas = torch.autograd.grad(loss, layers[-1].tape.states)   # dL/dh_t, total
    """
    layers: list[TapedLayer] = []
    with contextlib.ExitStack() as stack:
        for name, module in recurrent_modules(model):
            recurrent = module if isinstance(module, Recurrent) else unrolled_twin(module)
            tapes = stack.enter_context(recurrent.recording_tape())
            stack.enter_context(_naming(recurrent, name, tapes, layers))
            if recurrent is not module:
                stack.enter_context(_routed_through(module, recurrent))
        yield layers


@contextlib.contextmanager
def profiling(model: nn.Module) -> Iterator[dict[str, GradientProfile]]:
    """Record the gradient profile of every recurrent module of ``model`` in the block.

    The cheap path when only ``||dL/dh_k||`` is wanted: layers whose cell has an explicit
    BPTT (:class:`~bptt.cells.ElmanCell`, :class:`~bptt.cells.GRUCell` and
    :class:`~bptt.cells.LSTMCell`: :func:`~bptt.autograd.elman_bptt`,
    :func:`~bptt.autograd.gru_bptt`, :func:`~bptt.autograd.lstm_bptt`) compute the profile
    inside their own backward recursion; the other cells (IndRNN, residual, skip) run the
    unrolled loop with gradient hooks on each step's state. Torch modules are routed
    through their twin.

    Yields:
        module path -> :class:`~bptt.gradient_profile.GradientProfile`, filled by the
        next backward pass.
    """
    profiles: dict[str, GradientProfile] = {}
    with contextlib.ExitStack() as stack:
        for name, module in recurrent_modules(model):
            recurrent = module if isinstance(module, Recurrent) else unrolled_twin(module)
            profiles[name] = stack.enter_context(recurrent.recording_profile())
            if recurrent is not module:
                stack.enter_context(_routed_through(module, recurrent))
        yield profiles


@contextlib.contextmanager
def _naming(
    recurrent: Recurrent, name: str, tapes: list[LayerTape], layers: list[TapedLayer]
) -> Iterator[None]:
    """Append ``recurrent``'s tapes to ``layers`` as the module runs."""

    def collect(module: nn.Module, args: tuple, output: object) -> None:
        start = len(tapes) - module.num_layers
        for index, tape in enumerate(tapes[start:]):
            layers.append(TapedLayer(f"{name}.l{index}", tape))

    handle = recurrent.register_forward_hook(collect)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _routed_through(module: nn.RNNBase, twin: Recurrent) -> Iterator[None]:
    """Make calls of ``module`` run ``twin`` instead, until the block exits."""
    module.forward = twin.__call__
    try:
        yield
    finally:
        del module.forward


def _twin_cell(mode: str, input_size: int, hidden_size: int, bias: bool) -> AbstractCell:
    """The bptt cell computing one step of torch's fused ``mode`` (see :data:`bptt.cells.TORCH_MODES`)."""
    return TORCH_MODES.get(mode).cell(input_size, hidden_size, bias)


def module_label(path: str, module: nn.Module) -> str:
    """How a message names ``module``: by its path inside the model (``"encoder.lstm"``), or as
    ``"the model (LSTM)"`` when it is the model itself (the empty path of ``named_modules``)."""
    return path if path else f"the model ({type(module).__name__})"


def _check_supported(path: str, module: nn.RNNBase) -> None:
    if module.bidirectional:
        raise ValueError(
            f"{module_label(path, module)} is bidirectional; bptt diagnoses unidirectional layers only. "
            "Diagnose each direction as its own unidirectional module"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"{module_label(path, module)} has proj_size={module.proj_size}; LSTMs with projections are not "
            "supported by the diagnostics yet"
        )
