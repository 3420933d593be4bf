"""Recurrent: unroll a stack of cells over time, a drop-in for torch.nn.RNN / GRU / LSTM."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import final

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils.hooks import RemovableHandle

from bptt.cells import TORCH_MODES, AbstractCell, State, make_cell, map_state
from bptt.gradient_profile import GradientProfile

StepHook = Callable[[int, int, State], None]
"""``hook(layer, t, state)``, called after every step of the unrolled loop."""


@final
@dataclass
class LayerTape:
    r"""What one layer computed in an unrolled forward pass, as tensors in the autograd graph.

    The outputs and the final state are separate nodes from the states, so the gradient
    reaching them is the direct part (from the layers above and the loss) and the gradient
    reaching ``states[t]`` is the total derivative through all paths.

    Attributes:
        cell: the layer's cell.
        inputs: the layer's input sequence, ``(T, B, I)``, after inter-layer dropout.
        initial: the state before the first step.
        mask: ``(T, B)``, ``True`` at valid steps; ``None`` when every step is valid.
        states: the state after each step t = 0..T-1 (frozen at padded steps).
        outputs: the hidden output at each step (zero at padded steps), each ``(B, H)``.
        recurrent_parts: the recurrent projection :math:`W_{hh} h_{t-1} + b_{hh}` of each
            step, each ``(B, G*H)``: the only place :math:`W_{hh}` enters, so their
            gradients give :math:`\partial L / \partial W_{hh}` step by step.
        final: the final state the layer hands on (set when the layer has run).
    """

    cell: AbstractCell
    inputs: Tensor
    initial: State
    mask: Tensor | None
    states: list[State] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    recurrent_parts: list[Tensor] = field(default_factory=list)
    final: State | None = None


_FUSED_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
"""A cell's weights in the order and naming of torch's fused modules (suffix ``_l<k>``)."""


@final
class Recurrent(nn.Module):
    r"""Unrolls a stack of one-step cells over time.

    Inputs, outputs and state follow :class:`torch.nn.RNN` / :class:`torch.nn.GRU` /
    :class:`torch.nn.LSTM` (unidirectional). It computes, for layers ``l = 1..L``::

        for l, cell in enumerate(cells):
            state = state0[l]
            for t in range(T):
                state = cell.step(x[t], state)   # frozen where t >= lengths[b]
                out[t] = cell.hidden(state)      # zero where t >= lengths[b]
            x = dropout(out)                     # between layers, when training

    Three ways to run it, with identical results:

    - **fused**: when every cell has a ``fused_mode`` and nothing taps the steps, the
      stack runs through torch's fused kernel with the cells' own parameters;
    - **explicit BPTT** (:meth:`AbstractCell.explicit_bptt`: :func:`bptt.autograd.elman_bptt`
      for :class:`~bptt.cells.ElmanCell`, :func:`~bptt.autograd.gru_bptt`,
      :func:`~bptt.autograd.lstm_bptt` for the gated cells): while a gradient profile is
      recorded, or when no fused kernel exists (sigmoid);
    - **unrolled**: the Python loop above, with autograd, whenever a step hook or a tape is
      registered, and for cells with neither a fused kernel nor an explicit BPTT (IndRNN,
      residual, skip).

    Args:
        cells: one cell per layer, all of the same class and hidden size; layer ``l+1``'s
            input size must equal layer ``l``'s hidden size.
        batch_first: if ``True``, inputs and outputs are ``(B, T, *)``.
        dropout: dropout probability on the outputs of every layer but the last.
        residual: add each layer's input to its output, for layers after the first
            (residual connections between stacked layers, as in GNMT, Wu et al. 2016);
            the stack then runs layer by layer.

    Shape:
        - input: ``(T, B, I)`` (``(B, T, I)`` if ``batch_first``), ``(T, I)`` unbatched, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        - state: ``(L, B, H)``; a tuple ``(h, c)`` of those for LSTM; ``None`` means zeros.
        - lengths: ``(B,)`` integers in ``[1, T]``; steps past a sample's length are padding.
        - output: ``(T, B, H)`` (or batch first / packed like the input), the last layer's
          hidden states, zero at padded steps.
        - final state: like ``state``, taken at each sample's last valid step.
    """

    def __init__(
        self,
        cells: Sequence[AbstractCell],
        batch_first: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_stack(cells)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cells = nn.ModuleList(cells)
        self.batch_first = batch_first
        self.dropout = dropout
        self.residual = residual
        self._step_hooks: OrderedDict[int, StepHook] = OrderedDict()
        self._profile: GradientProfile | None = None
        self._tape: list[LayerTape] | None = None
        self._fused_template: dict[tuple[str, int, int], nn.Module] = {}

    @classmethod
    def from_name(
        cls,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
    ) -> Recurrent:
        """Build a stack of ``num_layers`` cells registered as ``cell`` (see :data:`bptt.cells.CELLS`)."""
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        cells = [make_cell(cell, size, hidden_size) for size in sizes]
        return cls(cells, batch_first=batch_first, dropout=dropout, residual=residual)

    @property
    def input_size(self) -> int:
        return self.cells[0].input_size

    @property
    def hidden_size(self) -> int:
        return self.cells[0].hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.cells)

    @property
    def fused_mode(self) -> str | None:
        """torch's fused mode that runs the whole stack, or ``None`` if there is none."""
        modes = {cell.fused_mode for cell in self.cells}
        return modes.pop() if len(modes) == 1 else None

    def register_step_hook(self, hook: StepHook) -> RemovableHandle:
        """Call ``hook(layer, t, state)`` after every step; forces the unrolled loop.

        The state passed is the one that autograd differentiates, so a hook may call
        ``register_hook`` on it to see ``dL/dh_t``. Returns a handle whose ``remove()``
        unregisters the hook.
        """
        handle = RemovableHandle(self._step_hooks)
        self._step_hooks[handle.id] = hook
        return handle

    @contextlib.contextmanager
    def recording_profile(self) -> Iterator[GradientProfile]:
        """Record ``||dL/dh_k||`` for every layer and step during the next backward pass.

        Layers that have an explicit BPTT (Elman, GRU and LSTM cells) compute the profile
        inside their backward recursion; the others, and every layer while a step hook or a
        tape forces the unrolled loop, record it through gradient hooks on the unrolled states.

        Example::

            with model.recording_profile() as profile:
                output, _ = model(x)
                loss_fn(output, y).backward()
            profile.norms()          # (T,), last layer
        """
        if self._profile is not None:
            raise RuntimeError("a gradient profile is already being recorded on this module")
        self._profile = GradientProfile()
        try:
            yield self._profile
        finally:
            self._profile = None

    @contextlib.contextmanager
    def recording_tape(self) -> Iterator[list[LayerTape]]:
        """Record every layer's inputs, states and outputs during the next forward passes.

        Forces the unrolled loop, so that each step's state is a tensor of its own in the
        autograd graph: ``torch.autograd.grad(loss, tape[l].states)`` gives the total
        derivatives ``dL/dh_t``. This is the tap that :func:`bptt.diagnose` builds on.
        """
        if self._tape is not None:
            raise RuntimeError("a tape is already being recorded on this module")
        self._tape = []
        try:
            yield self._tape
        finally:
            self._tape = None

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the stack over a sequence. See the class docstring for shapes."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("pass either a PackedSequence or `lengths`, not both")
            padded, packed_lengths = pad_packed_sequence(input)
            output, final = self._run(padded, state, packed_lengths, unbatched=False)
            return pack_padded_sequence(output, packed_lengths, enforce_sorted=False), final
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(
                f"expected input of shape (T, B, {self.input_size}) "
                f"({'batch first' if self.batch_first else 'time first'}) or unbatched "
                f"(T, {self.input_size}); got {input.ndim}-D input of shape {tuple(input.shape)}"
            )
        if input.ndim == 2:
            output, final = self._run(input.unsqueeze(1), state, lengths, unbatched=True)
            return output.squeeze(1), map_state(lambda s: s.squeeze(1), final)
        x = input.transpose(0, 1) if self.batch_first else input
        output, final = self._run(x, state, lengths, unbatched=False)
        return (output.transpose(0, 1) if self.batch_first else output), final

    def _run(
        self, x: Tensor, state: State | None, lengths: Tensor | None, unbatched: bool
    ) -> tuple[Tensor, State]:
        """The stack over time-major ``x`` of shape ``(T, B, I)``."""
        _check_input(x, self.input_size)
        steps, batch = x.shape[:2]
        mask = None if lengths is None else _length_mask(lengths, steps, batch, x.device)
        layer_states = self._split_state(state, batch, x, unbatched)
        # a parametrised weight (an orthogonal W_hh) is computed once per forward, not per step
        with parametrize.cached():
            if self.fused_mode is not None and not self.residual and not self._tapped():
                return self._forward_fused(x, layer_states, lengths, list(self.cells))
            return self._forward_layers(x, layer_states, mask, lengths)

    # -- the three ways to run -------------------------------------------------------

    def _tapped(self) -> bool:
        """Whether something needs the steps one by one (hooks, tape) or a profile."""
        return bool(self._step_hooks) or self._profile is not None or self._tape is not None

    def _forward_fused(
        self, x: Tensor, layer_states: list[State], lengths: Tensor | None, cells: list[AbstractCell]
    ) -> tuple[Tensor, State]:
        """``cells`` (the whole stack, or one layer) through torch's fused kernel."""
        fused = self._fused_module(cells[0].fused_mode, cells[0].input_size, len(cells))
        fused.train(self.training)
        parameters = {}
        for layer, cell in enumerate(cells):
            for name in _FUSED_WEIGHTS:  # by attribute: a parametrised weight is computed
                value = getattr(cell, name)
                if value is not None:
                    parameters[f"{name}_l{layer}"] = value
        hx = _stack_states(layer_states)
        sequence: Tensor | PackedSequence = x
        if lengths is not None:
            sequence = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        output, final = functional_call(fused, parameters, (sequence, hx))
        if lengths is not None:
            output, _ = pad_packed_sequence(output, total_length=x.shape[0])
        return output, final

    def _fused_module(self, mode: str, input_size: int, num_layers: int) -> nn.Module:
        """A parameter-less (meta) torch module that ``functional_call`` runs with our weights."""
        key = (mode, input_size, num_layers)
        if key not in self._fused_template:
            self._fused_template[key] = TORCH_MODES.get(mode).module(
                input_size,
                self.hidden_size,
                num_layers=num_layers,
                bias=self.cells[0].bias,
                dropout=self.dropout if num_layers > 1 else 0.0,
                device="meta",
            )
        return self._fused_template[key]

    def _forward_layers(
        self, x: Tensor, layer_states: list[State], mask: Tensor | None, lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        finals = []
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                x = nn.functional.dropout(x, self.dropout, self.training)
            tapped = self._step_hooks or self._tape is not None
            result = None
            if not self._tapped() and cell.fused_mode is not None:
                output, final = self._forward_fused(x, [layer_states[layer]], lengths, [cell])
                result = output, map_state(lambda part: part[0], final)
            elif not tapped:
                result = cell.explicit_bptt(x, layer_states[layer], mask, self._profile_recorder(layer))
            if result is None:
                result = self._unroll(layer, cell, x, layer_states[layer], mask)
            output, final = result
            x = output + x if self.residual and layer > 0 else output
            finals.append(final)
        return x, _stack_states(finals)

    def _profile_recorder(self, layer: int) -> Callable[[Tensor], None] | None:
        """The callback that stores layer ``layer``'s profile, when one is being recorded."""
        if self._profile is None:
            return None
        profile = self._profile

        def record(norms: Tensor) -> None:
            profile.per_sample[layer] = norms

        return record

    def _unroll(
        self, layer: int, cell: AbstractCell, x: Tensor, state: State, mask: Tensor | None
    ) -> tuple[Tensor, State]:
        recorder = _HookRecorder(self._profile, layer, x) if self._profile is not None else None
        tape = None
        if self._tape is not None:
            tape = LayerTape(cell, x, state, mask)
            self._tape.append(tape)
        outputs = []
        # unbind: one backward node hands every step its gradient; x[t] would give each step
        # a backward that adds into a zero tensor of x's whole size, O(T^2) in all
        for t, x_t in enumerate(x.unbind(0)):
            if tape is None:
                new_state = cell.step(x_t, state)
            else:  # the step in its two halves, keeping the recurrent projection
                input_part, recurrent_part = cell.gate_input(x_t, cell.hidden(state))
                tape.recurrent_parts.append(recurrent_part)
                new_state = cell.pointwise(input_part, recurrent_part, state)
            hidden = cell.hidden(new_state)
            if mask is not None:
                valid = mask[t].unsqueeze(-1)
                new_state = map_state(partial(torch.where, valid), new_state, state)
                hidden = torch.where(valid, cell.hidden(new_state), 0.0)
            state = new_state
            for hook in self._step_hooks.values():
                hook(layer, t, state)
            if recorder is not None:
                recorder.watch(t, cell.hidden(state))
            if tape is not None:
                # Fresh nodes: dL/dc_t must not include the path through h_t = o * tanh(c_t).
                state = map_state(torch.clone, state)
                tape.states.append(state)
                hidden = cell.hidden(state).clone() if mask is None else torch.where(
                    mask[t].unsqueeze(-1), cell.hidden(state), 0.0
                )
                tape.outputs.append(hidden)
            outputs.append(hidden)
        if tape is not None:
            state = tape.final = map_state(torch.clone, state)
        return torch.stack(outputs), state

    # -- states ------------------------------------------------------------------------

    def _split_state(self, state: State | None, batch: int, x: Tensor, unbatched: bool) -> list[State]:
        """Per-layer states from torch's stacked ``(L, B, H)`` format (zeros if ``None``)."""
        if state is None:
            return [cell.init_state(batch, device=x.device, dtype=x.dtype) for cell in self.cells]
        template = self.cells[0].init_state(batch, device="meta")
        expected = (self.num_layers, batch, self.hidden_size)
        parts = state if isinstance(state, tuple) else (state,)
        count = len(template) if isinstance(template, tuple) else 1
        if len(parts) != count or not all(isinstance(p, Tensor) for p in parts):
            raise ValueError(
                f"expected the initial state to be {'a tuple (h, c) of' if count > 1 else 'one'} "
                f"tensor{'s' if count > 1 else ''} of shape {expected}, got {_describe(state)}"
            )
        if unbatched:
            parts = tuple(p.unsqueeze(1) for p in parts)
        for part in parts:
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"expected an initial state of shape (num_layers, batch, hidden) = {expected}, "
                    f"got {tuple(part.shape)}"
                )
        return [
            tuple(p[layer] for p in parts) if count > 1 else parts[0][layer]
            for layer in range(self.num_layers)
        ]


@final
class _HookRecorder:
    """Collects ``||dL/dh_t||`` per sample from gradient hooks on the unrolled states.

    Steps that the loss does not depend on keep a zero norm.
    """

    def __init__(self, profile: GradientProfile, layer: int, x: Tensor) -> None:
        self.norms = x.new_zeros(x.shape[:2])
        profile.per_sample[layer] = self.norms

    def watch(self, t: int, hidden: Tensor) -> None:
        if not hidden.requires_grad:
            return

        def store(grad: Tensor) -> None:
            self.norms[t] = grad.detach().norm(dim=-1)

        hidden.register_hook(store)


def _stack_states(states: list[State]) -> State:
    """Per-layer states -> torch's stacked ``(L, B, H)`` format."""
    if isinstance(states[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*states, strict=True))
    return torch.stack(states)


def _check_stack(cells: Sequence[AbstractCell]) -> None:
    if len(cells) == 0:
        raise ValueError("Recurrent needs at least one cell, got an empty sequence")
    for layer, cell in enumerate(cells):
        if not isinstance(cell, AbstractCell):
            raise TypeError(f"layer {layer}: expected an AbstractCell, got {type(cell).__name__}")
        kind, first = parametrize.type_before_parametrizations(cell), parametrize.type_before_parametrizations(cells[0])
        if kind is not first or cell.hidden_size != cells[0].hidden_size:
            raise ValueError(
                f"all layers must be the same cell type and hidden size: layer 0 is "
                f"{first.__name__}(hidden={cells[0].hidden_size}), layer {layer} is "
                f"{kind.__name__}(hidden={cell.hidden_size})"
            )
        if layer > 0 and cell.input_size != cells[layer - 1].hidden_size:
            raise ValueError(
                f"layer {layer} expects input size {cell.input_size} but layer {layer - 1} "
                f"outputs {cells[layer - 1].hidden_size}; make them equal"
            )


def _check_input(x: Tensor, input_size: int) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"expected a floating-point input, got dtype {x.dtype}; for token ids use an "
            "embedding first (bptt.SequenceModel(vocab_size=...))"
        )
    if x.shape[-1] != input_size:
        raise ValueError(
            f"expected {input_size} input features (last dimension), got {x.shape[-1]} "
            f"in input of shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("expected at least one time step, got an empty sequence")
    if not torch.isfinite(x).all():
        raise ValueError("the input contains NaN or Inf values; clean or mask them before the model")


def _length_mask(lengths: Tensor, steps: int, batch: int, device: torch.device) -> Tensor:
    """``(T, B)`` boolean mask, ``True`` where step ``t < lengths[b]``."""
    if not isinstance(lengths, Tensor) or lengths.ndim != 1 or lengths.dtype.is_floating_point:
        raise ValueError(
            f"expected lengths as a 1-D integer tensor of size batch={batch}, got {_describe(lengths)}"
        )
    if lengths.numel() != batch:
        raise ValueError(f"expected {batch} lengths (one per sequence), got {lengths.numel()}")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > steps:
        raise ValueError(
            f"lengths must lie in [1, T={steps}], got values from {low} to {high}; "
            "did you pass lengths for a different (e.g. padded or truncated) batch?"
        )
    return torch.arange(steps, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}: ({', '.join(_describe(v) for v in value)})"
    return f"a {type(value).__name__}"
