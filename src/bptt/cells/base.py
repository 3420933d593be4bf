"""The one-step cell interface that every recurrent cell implements."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import ClassVar, TypeAlias

import torch
from torch import Tensor, nn

State: TypeAlias = Tensor | tuple[Tensor, ...]
"""A cell's state: one ``(B, H)`` tensor, or a tuple of them (LSTM: ``(h, c)``)."""


def map_state(fn: Callable[..., Tensor], *states: State) -> State:
    """Apply ``fn`` component-wise to one or more states of the same structure."""
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states, strict=True))
    return fn(*states)


def flatten_state(state: State) -> Tensor:
    """One tensor ``(B, S)`` for a state: the state itself, or its parts concatenated
    (an LSTM's ``(h, c)`` becomes ``cat([h, c], -1)``, so ``h`` is the first ``H`` columns)."""
    return torch.cat(state, -1) if isinstance(state, tuple) else state


def unflatten_state(flat: Tensor, hidden_size: int) -> State:
    """Inverse of :func:`flatten_state` for parts of ``hidden_size`` columns each."""
    if flat.shape[-1] == hidden_size:
        return flat
    return tuple(flat.split(hidden_size, dim=-1))


class AbstractCell(nn.Module, abc.ABC):
    """One step of a recurrent network: ``state_t = cell.step(x_t, state_{t-1})``.

    Cells keep torch's parameter names and gate layout (``weight_ih`` of shape
    ``(G*H, I)``, ``weight_hh`` of shape ``(G*H, H)``, ``bias_ih``, ``bias_hh``), so weights
    copy one-to-one to and from :class:`torch.nn.RNN`, :class:`torch.nn.GRU` and
    :class:`torch.nn.LSTM`. A cell does one step; :class:`bptt.Recurrent` unrolls it::

        state = cell.init_state(batch_size)
        for x_t in inputs:              # inputs: (T, B, I)
            state = cell.step(x_t, state)
            h_t = cell.hidden(state)

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        bias: if ``False``, the cell has no ``bias_ih`` / ``bias_hh``.
    """

    num_gates: ClassVar[int]
    """Number of ``H``-row blocks stacked in ``weight_ih`` / ``weight_hh`` (1, 3 or 4)."""

    gate_activations: ClassVar[dict[str, str]]
    """The names returned by :meth:`gates`, each with its activation: ``"sigmoid"``,
    ``"tanh"`` or ``"none"`` (a pre-activation)."""

    unit_wise: ClassVar[bool] = True
    r"""Whether :meth:`pointwise` is unit by unit (see there), so that the step's Jacobian
    factors as :math:`A\, W_{hh} + C`; ``False`` for a cell whose step multiplies another
    matrix after the projections (LEM, coRNN), which the diagnostics then linearise whole."""

    slow_parameters: ClassVar[dict[str, float]] = {}
    """Parameters (names relative to the cell) that train at a fraction of the learning rate,
    with that fraction, e.g. expRNN's skew-symmetric parameter at 0.1; ``bptt train`` builds
    the optimizer's parameter groups from it (:func:`bptt.training.parameter_groups`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        rows = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(self._recurrent_weight_shape()))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))
            self.bias_hh = nn.Parameter(torch.empty(self._recurrent_weight_shape()[0]))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        for name, shape in self.extra_parameter_shapes().items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def extra_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameters beyond torch's four, by name and shape, created (empty) before
        :meth:`reset_parameters` fills every parameter; none by default."""
        return {}

    def _recurrent_weight_shape(self) -> tuple[int, ...]:
        """Shape of ``weight_hh``: ``(G*H, H)``, torch's layout."""
        return (self.num_gates * self.hidden_size, self.hidden_size)

    @property
    def recurrent_matrix(self) -> Tensor:
        """:math:`W_{hh}` as a ``(G*H, H)`` matrix, however the cell stores it."""
        return self.weight_hh

    def reset_parameters(self) -> None:
        """torch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def gate_input(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """The input and recurrent projections ``W_ih x_t + b_ih`` and ``W_hh h + b_hh``."""
        return nn.functional.linear(x_t, self.weight_ih, self.bias_ih), self.recurrent_projection(h, self.weight_hh)

    def recurrent_projection(self, h: Tensor, weight: Tensor) -> Tensor:
        """``weight h + b_hh`` for a recurrent weight ``weight`` shaped like ``weight_hh``: the
        only place the recurrent weight enters a step (diagnostics differentiate a step
        with respect to it through this method)."""
        return nn.functional.linear(h, weight, self.bias_hh)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The zero state for a batch of ``batch_size`` sequences."""
        device = self.weight_hh.device if device is None else device
        dtype = self.weight_hh.dtype if dtype is None else dtype
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros

    def step(self, x_t: Tensor, state: State) -> State:
        """Advance one time step: the two projections, then the cell's pointwise update.

        Args:
            x_t: input at step t, shape ``(B, I)``.
            state: state at step t-1 (see :meth:`init_state`).

        Returns:
            The state at step t, with the same structure as ``state``.
        """
        return self.pointwise(*self.gate_input(x_t, self.hidden(state)), state)

    def gates(self, x_t: Tensor, state: State) -> dict[str, Tensor]:
        """The named gate values of the step from ``state`` on input ``x_t``, each ``(B, H)``.

        Elman cells give the pre-activation ``"z"``; gated cells their activated gates.
        Diagnostics read them for saturation and gate statistics, and to say in which gate
        a non-finite value first appears.
        """
        return self.gate_values(*self.gate_input(x_t, self.hidden(state)), state)

    @abc.abstractmethod
    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> dict[str, Tensor]:
        """:meth:`gates` from the projections ``W_ih x_t + b_ih`` and ``W_hh h + b_hh``."""

    @abc.abstractmethod
    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> State:
        """The step after the projections: unit by unit, unit ``j`` of the new state
        depends only on unit ``j`` of every gate block and of the old state (unless the
        cell says otherwise with :attr:`unit_wise`).

        This split makes the step's Jacobian :math:`J = A\\, W_{hh} + C` with ``A`` and ``C``
        unit-wise (see :class:`bptt.diagnostics.jacobian.CellSteps`).
        """

    def slope(self, gates: dict[str, Tensor]) -> Tensor | None:
        """The derivative :math:`f'` of the cell's one nonlinearity at its pre-activation
        (from :meth:`gates`), ``(N, H)``; ``None`` for a cell with several gates. Diagnostics
        read saturation and dead units from it."""
        return None

    @property
    def piecewise_linear(self) -> bool:
        """Whether :meth:`slope` is 0 or 1 only (ReLU, modReLU): a unit can then be dead."""
        return False

    def hidden(self, state: State) -> Tensor:
        """The hidden vector ``h_t`` (the cell's output) inside a state, shape ``(B, H)``."""
        return state

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: State,
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, State] | None:
        """Run a whole sequence through the cell's explicit-BPTT autograd Function.

        The backward pass is the delta recursion written out, and hands the gradient
        profile ``||dL/dh_t||`` (per step and sample, ``(T, B)``) to ``on_profile``.

        Args:
            inputs: ``(T, B, I)``.
            state: the initial state.
            mask: ``(T, B)``, ``False`` at padded steps (the state is frozen there).
            on_profile: receives the profile during the backward pass.

        Returns:
            ``(output, final state)`` like one layer of :class:`bptt.Recurrent`, or
            ``None`` when the cell has no explicit BPTT (the unrolled loop is used then).
        """
        return None

    @property
    def fused_mode(self) -> str | None:
        """torch's fused RNN mode (``"RNN_TANH"``, ``"RNN_RELU"``, ``"GRU"``, ``"LSTM"``) that
        computes exactly this cell, or ``None`` when only the unrolled loop can run it."""
        return None

    def forward(self, x_t: Tensor, state: State) -> State:
        return self.step(x_t, state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"
