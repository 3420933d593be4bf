r"""In-place initialisers for recurrent weights, named like :mod:`torch.nn.init`.

Recurrent weights follow torch's layout: ``weight_hh`` has shape ``(G*H, H)``, the ``G``
gate blocks (1 for Elman; 3 for GRU: r, z, n; 4 for LSTM: i, f, g, o) stacked along dim 0.
The tensor-level functions (:func:`orthogonal_`, :func:`identity_`) treat each ``(H, H)``
gate block on its own; :func:`init_recurrent_` applies a scheme registered by name in
:data:`INITS` to every recurrent layer of a module::

    lstm = torch.nn.LSTM(16, 32, num_layers=2)
    init_recurrent_(lstm, "orthogonal")      # each gate block of weight_hh_l0, _l1 orthogonal
    rnn = torch.nn.RNN(16, 32, nonlinearity="relu")
    init_recurrent_(rnn, "identity")         # IRNN: W_hh = I, small W_ih, zero biases
    init_recurrent_(lstm, "chrono", max_length=100)  # gate biases for memories up to ~100 steps

Gate-bias initialisers (:func:`chrono_`, :func:`forget_bias_`) work on whole modules (bptt
cells, :class:`torch.nn.LSTM` / ``GRU`` and their cells, every layer and direction).
torch splits each gate bias into ``bias_ih + bias_hh``; only the sum enters the gate, so
these functions write the value into ``bias_hh`` and zero the same block of ``bias_ih``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias, final

import torch
from torch import Tensor, nn

from bptt._registry import Registry
from bptt.weights import RecurrentLayer, gate_blocks, recurrent_layers, recurrent_weights

__all__ = [
    "INDRNN_MAGNITUDE",
    "INITS",
    "InitOptions",
    "InitScheme",
    "cayley_",
    "cayley_scheme",
    "chrono_",
    "chrono_scheme",
    "default_scheme",
    "forget_bias_",
    "forget_bias_scheme",
    "henaff_",
    "henaff_scheme",
    "identity_",
    "identity_scheme",
    "indrnn_scheme",
    "init_recurrent_",
    "orthogonal_",
    "orthogonal_scheme",
]


def orthogonal_(
    tensor: Tensor,
    gain: float = 1.0,
    num_gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill each gate block of ``tensor`` with its own random orthogonal matrix, in place.

    Unlike :func:`torch.nn.init.orthogonal_`, which makes the stacked ``(G*H, H)`` matrix
    semi-orthogonal as a whole (so no single gate block is orthogonal), every ``(H, H)``
    block :math:`W_g` gets an independent draw from the Haar measure on :math:`O(H)`, scaled
    by ``gain``:

    .. math::
        A_g \sim \mathcal{N}(0, 1)^{H \times H}, \quad A_g = Q_g R_g, \quad
        W_g = \text{gain} \cdot Q_g \, \mathrm{diag}(\mathrm{sign}(\mathrm{diag}\, R_g)),

    so that :math:`W_g^\top W_g = \text{gain}^2 I`. The sign correction makes the QR
    factorisation unique; without it :math:`Q_g` is not Haar-distributed (Mezzadri 2007,
    "How to generate random matrices from the classical compact groups"). Orthogonal
    recurrent weights have all singular values equal to ``gain``, so a linear recurrence
    neither shrinks nor grows the gradient (Saxe, McClelland & Ganguli 2014).

    Args:
        tensor: the ``(num_gates * H, H)`` weight to fill.
        gain: scale of each orthogonal block.
        num_gates: number ``G`` of ``(H, H)`` blocks stacked along dim 0.
        generator: the random number generator to sample from (on ``tensor``'s device).

    Returns:
        ``tensor``, filled.

    Shape:
        - tensor: ``(G * H, H)``.
    """
    _, size = gate_blocks(tensor, num_gates, caller="orthogonal_")
    # QR needs float32/float64; lower precisions are drawn in float32 and cast on copy.
    dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.no_grad():
        gaussian = torch.randn(
            num_gates, size, size, generator=generator, dtype=dtype, device=tensor.device
        )
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)
        tensor.copy_(q.reshape(num_gates * size, size).mul_(gain))
    return tensor


def identity_(tensor: Tensor, scale: float = 1.0, num_gates: int = 1) -> Tensor:
    r"""Fill each gate block of ``tensor`` with a scaled identity, in place.

    .. math::
        W_g = \text{scale} \cdot I_H \qquad (g = 1, \dots, G)

    Args:
        tensor: the ``(num_gates * H, H)`` weight to fill.
        scale: the diagonal value.
        num_gates: number ``G`` of ``(H, H)`` blocks stacked along dim 0.

    Returns:
        ``tensor``, filled.

    Shape:
        - tensor: ``(G * H, H)``.
    """
    _, size = gate_blocks(tensor, num_gates, caller="identity_")
    with torch.no_grad():
        eye = torch.eye(size, dtype=tensor.dtype, device=tensor.device).mul_(scale)
        tensor.copy_(eye.repeat(num_gates, 1))
    return tensor


def _work_dtype(tensor: Tensor) -> torch.dtype:
    """float32/float64 as they are; lower precisions are computed in float32, cast on copy."""
    return tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32


def henaff_(
    tensor: Tensor, num_gates: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill each gate block with a random block-diagonal rotation (Henaff et al. 2016), in place.

    Henaff, Szlam & LeCun (2016, "Recurrent orthogonal networks and long-memory tasks")
    draw a block-diagonal skew-symmetric matrix and take its exponential:

    .. math::
        A_g = \mathrm{blockdiag}\Big(\begin{bmatrix} 0 & s_1 \\ -s_1 & 0 \end{bmatrix},
        \dots, \begin{bmatrix} 0 & s_{\lfloor H/2 \rfloor} \\ -s_{\lfloor H/2 \rfloor} & 0
        \end{bmatrix}\Big), \quad s_k \sim \mathcal{U}(-\pi, \pi), \qquad
        W_g = \exp(A_g) = \mathrm{blockdiag}\Big(\begin{bmatrix} \cos s_k & \sin s_k \\
        -\sin s_k & \cos s_k \end{bmatrix}\Big),

    with a trailing :math:`1` on the diagonal when ``H`` is odd. Each :math:`W_g` is
    orthogonal (a rotation, :math:`\det W_g = 1`) with eigenvalues
    :math:`e^{\pm i s_k}`: on the unit circle, phases uniform in :math:`(-\pi, \pi)`. The
    exponential is computed in this closed form, exact up to the rounding of ``cos``/``sin``.

    Args:
        tensor: the ``(num_gates * H, H)`` weight to fill.
        num_gates: number ``G`` of ``(H, H)`` blocks stacked along dim 0, each drawn anew.
        generator: the random number generator to sample from (on ``tensor``'s device).

    Returns:
        ``tensor``, filled.

    Shape:
        - tensor: ``(G * H, H)``.
    """
    _, size = gate_blocks(tensor, num_gates, caller="henaff_")
    dtype, device = _work_dtype(tensor), tensor.device
    with torch.no_grad():
        pairs = size // 2
        angles = torch.rand(num_gates, pairs, generator=generator, dtype=dtype, device=device)
        angles = angles.mul_(2 * math.pi).sub_(math.pi)
        cos, sin = angles.cos(), angles.sin()
        even = torch.arange(0, 2 * pairs, 2, device=device)
        rotation = torch.zeros(num_gates, size, size, dtype=dtype, device=device)
        rotation[:, even, even] = cos
        rotation[:, even, even + 1] = sin
        rotation[:, even + 1, even] = -sin
        rotation[:, even + 1, even + 1] = cos
        if size % 2:
            rotation[:, -1, -1] = 1.0
        tensor.copy_(rotation.reshape(num_gates * size, size))
    return tensor


def cayley_(
    tensor: Tensor, num_gates: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill each gate block with the Cayley transform of a random skew-symmetric matrix, in place.

    .. math::
        A_g = U_g - U_g^\top, \quad (U_g)_{jk} \sim \mathcal{U}(-\pi, \pi) \text{ for } j < k,
        \; 0 \text{ otherwise}, \qquad W_g = (I + A_g)^{-1} (I - A_g).

    The skew-symmetric :math:`A_g` has purely imaginary eigenvalues :math:`i\lambda`, so
    :math:`I + A_g` is always invertible and :math:`W_g` is orthogonal with eigenvalues
    :math:`(1 - i\lambda)/(1 + i\lambda)` on the unit circle, never :math:`-1`
    (:math:`\det W_g = 1`). This is the Cayley parametrisation of Wisdom et al. (2016) and
    Helfrich, Willmott & Ye (2018, "Orthogonal recurrent neural networks with scaled
    Cayley transform"), here with the dense uniform draw of :math:`A_g` above, *not*
    Helfrich et al.'s block-diagonal initialisation of :math:`A_g`. :math:`A_g` is recovered
    from :math:`W_g` by the same transform, :math:`A_g = (I + W_g)^{-1}(I - W_g)`.

    Args:
        tensor: the ``(num_gates * H, H)`` weight to fill.
        num_gates: number ``G`` of ``(H, H)`` blocks stacked along dim 0, each drawn anew.
        generator: the random number generator to sample from (on ``tensor``'s device).

    Returns:
        ``tensor``, filled; orthogonal per block up to the float error of the solve.

    Shape:
        - tensor: ``(G * H, H)``.
    """
    _, size = gate_blocks(tensor, num_gates, caller="cayley_")
    dtype, device = _work_dtype(tensor), tensor.device
    with torch.no_grad():
        uniform = torch.rand(num_gates, size, size, generator=generator, dtype=dtype, device=device)
        upper = uniform.mul_(2 * math.pi).sub_(math.pi).triu_(diagonal=1)
        skew = upper - upper.transpose(-2, -1)
        eye = torch.eye(size, dtype=dtype, device=device)
        cayley = torch.linalg.solve(eye + skew, eye - skew)
        tensor.copy_(cayley.reshape(num_gates * size, size))
    return tensor


def _layers_or_raise(module: nn.Module, caller: str) -> list[RecurrentLayer]:
    """:func:`~bptt.weights.recurrent_layers` of ``module``; raises if there is none."""
    layers = recurrent_layers(module)
    if not layers and recurrent_weights(module):
        raise ValueError(
            f"{caller} found only recurrent weights computed by a parametrisation in "
            f"{type(module).__name__} (a cell that keeps W_hh orthogonal, such as exprnn, or an "
            "orthogonal constraint); such a weight starts where its cell or constraint puts it: "
            "use the 'default' scheme (no --init)"
        )
    if not layers:
        found = [name for name, _ in module.named_parameters()]
        raise ValueError(
            f"{caller} expected a module with at least one recurrent weight named "
            f"'weight_hh' or 'weight_hh_l<k>' (torch's naming), received "
            f"{type(module).__name__} with parameters {found}; pass the recurrent part of "
            f"the model (e.g. model.recurrent, a torch.nn.LSTM or a bptt cell); cells whose gates "
            f"read x_t only (mingru, minlstm) have no recurrent weight: give them no --init"
        )
    return layers


_GATED = {3: "GRU (gates r, z, n)", 4: "LSTM (gates i, f, g, o)"}


def _gate_biases(
    layer: RecurrentLayer, caller: str, gates: tuple[int, ...]
) -> tuple[int, int, Tensor | None, Tensor]:
    """``(G, H, bias_ih, bias_hh)`` of a gated layer with ``G`` in ``gates``; raises otherwise.

    An LSTM with ``proj_size > 0`` has non-square recurrent blocks but is known to have 4
    gates. A layer with a single bias (not torch's layout) gets the whole value in it.
    """
    num_gates = 4 if layer.projection is not None else layer.num_gates
    if layer.weight_ih is not None and layer.weight_ih.shape[0] != layer.weight_hh.shape[0]:
        raise ValueError(
            f"{caller} expected torch's gate layout, the same gate blocks in weight_ih "
            f"and weight_hh, received {layer.name} with weight_ih of {layer.weight_ih.shape[0]} rows and "
            f"weight_hh of shape {tuple(layer.weight_hh.shape)} (a cell with its own gates, such as lem); "
            "gate-bias initialisations fit LSTM and GRU cells only: choose another --init"
        )
    if num_gates not in gates:
        kind = {1: "an Elman (ungated)"}.get(num_gates) or (
            f"a {_GATED[num_gates]}" if num_gates in _GATED else f"a {num_gates}-gate"
        )
        expected = " or ".join(_GATED[g] for g in gates)
        fix = (
            "a GRU has no forget gate; its update gate plays that role, see chrono_"
            if num_gates == 3
            else f"gate biases only exist in gated cells: use an LSTM"
            f"{' or GRU' if 3 in gates else ''} cell, or another initialisation (e.g. "
            f"'orthogonal' or 'identity')"
        )
        raise ValueError(
            f"{caller} expected {expected} recurrent layers, received {kind} layer "
            f"{layer.name} of shape {tuple(layer.weight_hh.shape)}; {fix}"
        )
    if not layer.biases:
        raise ValueError(
            f"{caller} expected {layer.name}'s layer to have gate biases, received a layer "
            f"built with bias=False; build it with bias=True"
        )
    bias_ih, bias_hh = (None, *layer.biases) if len(layer.biases) == 1 else layer.biases
    return num_gates, bias_hh.numel() // num_gates, bias_ih, bias_hh


def _check_max_length(max_length: object, caller: str) -> float:
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, (int, float))
        or not math.isfinite(max_length)
        or max_length < 2
    ):
        raise ValueError(
            f"{caller} expected max_length (T_max, the longest dependency to remember, in "
            f"steps) to be a finite number >= 2, received {max_length!r}"
        )
    return float(max_length)


def _chrono_layer(
    layer: RecurrentLayer, max_length: float, generator: torch.Generator | None
) -> None:
    num_gates, size, bias_ih, bias_hh = _gate_biases(layer, "chrono_", (3, 4))
    with torch.no_grad():
        # log U(1, T_max - 1), drawn in float64 on the CPU (cheap, device-independent draws)
        uniform = torch.rand(size, generator=generator, dtype=torch.float64)
        memory = uniform.mul_(max_length - 2).add_(1).log_()
        memory = memory.to(dtype=bias_hh.dtype, device=bias_hh.device)
        if bias_ih is not None:
            bias_ih.zero_()
        bias_hh.zero_()
        blocks = bias_hh.view(num_gates, size)
        if num_gates == 4:  # LSTM: i, f, g, o
            blocks[1] = memory
            blocks[0] = -memory
        else:  # GRU: r, z, n
            blocks[1] = memory


def _forget_bias_layer(layer: RecurrentLayer, value: float) -> None:
    _, size, bias_ih, bias_hh = _gate_biases(layer, "forget_bias_", (4,))
    with torch.no_grad():
        if bias_ih is not None:
            bias_ih[size : 2 * size] = 0.0
        bias_hh[size : 2 * size] = value


def chrono_(
    module_or_cell: nn.Module, max_length: float, generator: torch.Generator | None = None
) -> nn.Module:
    r"""Chrono initialisation of the gate biases (Tallec & Ollivier 2018), in place.

    Tallec & Ollivier (2018, "Can recurrent neural networks warp time?") show that a gate
    with bias :math:`b` forgets at rate about :math:`1 - \sigma(b) = 1/(1 + e^b)`, i.e.
    remembers for about :math:`1 + e^b` steps, and set the biases so that the memory times
    are spread over :math:`[2, T_\max]`:

    - **LSTM** (gates ``i, f, g, o``): :math:`b_f = \log \mathcal{U}(1, T_\max - 1)`,
      :math:`b_i = -b_f`, :math:`b_g = b_o = 0`, a new draw per unit.
    - **GRU** (gates ``r, z, n``): torch's GRU keeps memory with the *update* gate,
      :math:`h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}`, so :math:`z_t` plays the role
      of the LSTM forget gate :math:`f_t` (and :math:`1 - z_t` that of the input gate, tied
      to it). Keeping memory means :math:`z_t` near 1, hence the *positive* sign:
      :math:`b_z = +\log \mathcal{U}(1, T_\max - 1)`, so :math:`z = \sigma(b_z) = \tau / (1
      + \tau)` with :math:`\tau \in [1, T_\max - 1]` and a memory time :math:`1 + \tau`.
      The GRU's other biases :math:`b_r = b_n = 0`. (Papers writing the GRU as
      :math:`h_t = z_t \odot n_t + (1 - z_t) \odot h_{t-1}` use the opposite sign.)

    torch splits every gate bias into ``bias_ih + bias_hh``; the value is written in
    ``bias_hh`` and ``bias_ih`` is zeroed, so their sum is what the paper specifies. (For
    the GRU candidate, :math:`b_{hn}` sits inside :math:`r_t \odot (W_{hn} h + b_{hn})`;
    both parts are zero, so the split does not matter there.) Weights are left as they are.

    Args:
        module_or_cell: a bptt :class:`~bptt.cells.LSTMCell` / :class:`~bptt.cells.GRUCell`,
            a :class:`torch.nn.LSTM` / ``GRU`` (every layer and direction), their cells, or
            any module containing them.
        max_length: :math:`T_\max`, the longest dependency to remember, in steps (>= 2).
        generator: a CPU random number generator, for reproducible draws.

    Returns:
        ``module_or_cell``.

    Raises:
        ValueError: if ``max_length`` is not a finite number >= 2, ``module_or_cell`` has no
            recurrent layer, or one of its layers is ungated (Elman) or has no bias;
            nothing is changed then.
    """
    max_length = _check_max_length(max_length, "chrono_")
    layers = _layers_or_raise(module_or_cell, "chrono_")
    for layer in layers:  # validate every layer before changing any
        _gate_biases(layer, "chrono_", (3, 4))
    for layer in layers:
        _chrono_layer(layer, max_length, generator)
    return module_or_cell


def forget_bias_(module_or_cell: nn.Module, value: float = 1.0) -> nn.Module:
    r"""Set the LSTM forget-gate bias to ``value`` (unit forget bias), in place.

    Gers, Schmidhuber & Cummins (2000) and Jozefowicz, Zaremba & Sutskever (2015, "An
    empirical exploration of recurrent network architectures") start the forget gate open,
    :math:`b_f = 1` so :math:`f \approx \sigma(1) \approx 0.73`, so that the cell state
    and its gradient :math:`\partial c_t / \partial c_{t-1} = \mathrm{diag}(f_t)` are
    carried over many steps from the start of training. The forget block of the total bias
    ``bias_ih + bias_hh`` becomes ``value`` (``bias_hh`` gets ``value``, ``bias_ih`` 0);
    every other bias and weight is left as it is.

    Args:
        module_or_cell: a bptt :class:`~bptt.cells.LSTMCell`, a :class:`torch.nn.LSTM` /
            ``LSTMCell`` (every layer and direction), or any module containing them.
        value: the forget-gate bias.

    Returns:
        ``module_or_cell``.

    Raises:
        ValueError: if ``module_or_cell`` has no recurrent layer, or one of its layers is
            not an LSTM (for a GRU, see :func:`chrono_`) or has no bias; nothing is changed
            then.
    """
    layers = _layers_or_raise(module_or_cell, "forget_bias_")
    for layer in layers:
        _gate_biases(layer, "forget_bias_", (4,))
    for layer in layers:
        _forget_bias_layer(layer, value)
    return module_or_cell


@final
@dataclass(frozen=True)
class InitOptions:
    r"""The settings of :func:`init_recurrent_` passed to every scheme (each uses some).

    Args:
        gain: scale of orthogonal recurrent blocks.
        scale: diagonal of identity recurrent blocks.
        input_std: standard deviation of the Gaussian input weights of ``"identity"``.
        generator: the random number generator to sample from, ``None`` for torch's global one.
        max_length: :math:`T_\max` of ``"chrono"``, which requires it; ``None`` if not set.
        forget_bias: the LSTM forget-gate bias of ``"forget-bias"``.
        top_layer: whether the layer is the last of the module's recurrent layers (set by
            :func:`init_recurrent_`; ``"indrnn"`` starts it closer to 1).
    """

    gain: float = 1.0
    scale: float = 1.0
    input_std: float = 1e-3
    generator: torch.Generator | None = None
    max_length: float | None = None
    forget_bias: float = 1.0
    top_layer: bool = False


InitScheme: TypeAlias = Callable[[RecurrentLayer, InitOptions], None]
"""A scheme initialises one recurrent layer in place: ``scheme(layer, options)``."""


def default_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""Keep torch's default initialisation, a no-op (so a config can name it).

    torch draws every weight and bias of a recurrent layer independently from
    :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`, so the recurrent matrix has spectral
    radius about :math:`1/\sqrt{3}` (circular law) and, in a tanh or sigmoid network,
    gradients through time tend to vanish.
    """


def orthogonal_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""Per-gate orthogonal recurrent weights; input weights and biases are left as they are.

    Each gate block :math:`W_{hh,g}` becomes an independent Haar-random orthogonal matrix
    times ``options.gain`` (see :func:`orthogonal_`), so :math:`W_{hh,g}^\top W_{hh,g} =
    \text{gain}^2 I` and every singular value of each block equals the gain: the linear
    part of the step-to-step Jacobian :math:`\mathrm{diag}(f'(z_t)) W_{hh}` preserves norms,
    the remedy for vanishing and exploding gradients of Saxe, McClelland & Ganguli (2014,
    "Exact solutions to the nonlinear dynamics of learning in deep linear neural
    networks"), studied for RNNs by Henaff, Szlam & LeCun (2016, "Recurrent orthogonal
    networks and long-memory tasks").
    """
    orthogonal_(
        layer.weight_hh, gain=options.gain, num_gates=layer.num_gates, generator=options.generator
    )


def identity_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""IRNN: identity recurrent weights, small Gaussian input weights, zero biases.

    Le, Jaitly & Hinton (2015, "A simple way to initialize recurrent networks of rectified
    linear units") set

    .. math::
        W_{hh} = \text{scale} \cdot I, \qquad
        W_{ih} \sim \mathcal{N}(0, \text{input\_std}^2), \qquad b_{ih} = b_{hh} = 0,

    so that with a ReLU cell and non-negative state, :math:`h_t = \mathrm{relu}(h_{t-1} +
    W_{ih} x_t)` starts as an integrator: the hidden state is copied forward unchanged and
    :math:`\partial h_t / \partial h_{t-1} = I` on the active units, so the gradient
    neither vanishes nor explodes through time. The scheme is meant for ReLU Elman cells
    (``nn.RNN(nonlinearity="relu")``, the ``"irnn"`` cell); it is not enforced, and for a
    gated cell every gate block becomes ``scale * I``.
    """
    identity_(layer.weight_hh, scale=options.scale, num_gates=layer.num_gates)
    if layer.weight_ih is not None:
        nn.init.normal_(layer.weight_ih, 0.0, options.input_std, generator=options.generator)
    for bias in layer.biases:
        nn.init.zeros_(bias)


def henaff_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""Henaff et al. (2016) rotations as recurrent gate blocks (see :func:`henaff_`);
    input weights and biases are left as they are (``gain`` is not used)."""
    henaff_(layer.weight_hh, num_gates=layer.num_gates, generator=options.generator)


def cayley_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""Cayley transforms of random skew-symmetric matrices as recurrent gate blocks (see
    :func:`cayley_`); input weights and biases are left as they are (``gain`` is not used)."""
    cayley_(layer.weight_hh, num_gates=layer.num_gates, generator=options.generator)


def chrono_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""Chrono gate biases (Tallec & Ollivier 2018) with :math:`T_\max` =
    ``options.max_length`` (see :func:`chrono_`); weights are left as they are.

    Raises:
        ValueError: if ``options.max_length`` is ``None`` or < 2, or the layer is not an
            LSTM or GRU with biases.
    """
    if options.max_length is None:
        raise ValueError(
            "the 'chrono' initialisation expected max_length (T_max, the longest dependency "
            "to remember, in steps), received None; pass init_recurrent_(..., "
            "max_length=T_max), e.g. the task's sequence length"
        )
    max_length = _check_max_length(options.max_length, "chrono_")
    _chrono_layer(layer, max_length, options.generator)


INDRNN_MAGNITUDE = 2.0
r"""IndRNN's γ: a unit's gradient may grow or shrink by at most this factor over ``max_length``
steps, :math:`\gamma^{-1/T} \le |u| \le \gamma^{1/T}` (``MAG`` in Li et al.'s code)."""


def indrnn_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    r"""IndRNN as published for the adding problem (Li et al. 2018): with
    :math:`T` = ``options.max_length`` and :math:`\gamma` = :data:`INDRNN_MAGNITUDE`,

    .. math::
        u \sim \mathcal{U}(0, \gamma^{1/T}) 	ext{ (lower layers)}, \qquad
        u \sim \mathcal{U}(\gamma^{-1/T}, \gamma^{1/T}) 	ext{ (top layer)}, \qquad
        W_{ih} \sim \mathcal{N}(0, 	ext{input\_std}^2), \qquad b = 0.

    Every unit of the top layer starts as a near-perfect integrator (:math:`u pprox 1`
    over :math:`T` steps), the lower layers with a spread of time scales; the small input
    weights (std 1e-3) keep the ReLU units active and the state small at the start. Pair it
    with the bound :math:`|u| \le \gamma^{1/T}` (constraint ``"indrnn:2"``).

    Raises:
        ValueError: if ``options.max_length`` is ``None`` or < 2, or the recurrent weight
            is not a vector (an IndRNN layer).
    """
    if options.max_length is None:
        raise ValueError(
            "the 'indrnn' initialisation expected max_length (T, the sequence length the bound "
            "2^(1/T) is for), received None; pass init_recurrent_(..., max_length=T)"
        )
    length = _check_max_length(options.max_length, "indrnn_scheme")
    if layer.weight_hh.ndim != 1:
        raise ValueError(
            f"the 'indrnn' initialisation expected a vector recurrent weight u (an IndRNN layer), "
            f"received {layer.name} of shape {tuple(layer.weight_hh.shape)}; use it with --cell indrnn"
        )
    upper = INDRNN_MAGNITUDE ** (1.0 / length)
    lower = 1.0 / upper if options.top_layer else 0.0
    nn.init.uniform_(layer.weight_hh, lower, upper, generator=options.generator)
    if layer.weight_ih is not None:
        nn.init.normal_(layer.weight_ih, 0.0, options.input_std, generator=options.generator)
    for bias in layer.biases:
        nn.init.zeros_(bias)


def forget_bias_scheme(layer: RecurrentLayer, options: InitOptions) -> None:
    """Unit forget bias: the LSTM forget-gate bias becomes ``options.forget_bias`` (see
    :func:`forget_bias_`); everything else is left as it is."""
    _forget_bias_layer(layer, options.forget_bias)


INITS: Registry[InitScheme] = Registry("init")
INITS.register("default", default_scheme)
INITS.register("orthogonal", orthogonal_scheme)
INITS.register("identity", identity_scheme)
INITS.register("henaff", henaff_scheme)
INITS.register("cayley", cayley_scheme)
INITS.register("chrono", chrono_scheme)
INITS.register("forget-bias", forget_bias_scheme)
INITS.register("indrnn", indrnn_scheme)


def init_recurrent_(
    module: nn.Module,
    scheme: str,
    *,
    gain: float = 1.0,
    scale: float = 1.0,
    input_std: float = 1e-3,
    generator: torch.Generator | None = None,
    max_length: float | None = None,
    forget_bias: float = 1.0,
) -> nn.Module:
    r"""Initialise every recurrent layer of ``module`` in place with the scheme ``scheme``.

    A recurrent layer is found by its recurrent weight, a parameter named ``weight_hh``
    (bptt cells, :class:`torch.nn.RNNCell` / ``GRUCell`` / ``LSTMCell``) or ``weight_hh_l<k>``
    (``weight_hh_l<k>_reverse``; :class:`torch.nn.RNN` / ``GRU`` / ``LSTM``); its gate count
    is :math:`G = \text{rows} / \text{columns}`, and its input weight and biases are the
    parameters of the same owner with the same suffix. The schemes are those in
    :data:`INITS`: ``"default"`` (torch's own, a no-op), ``"orthogonal"``
    (:func:`orthogonal_scheme`), ``"identity"`` (IRNN, :func:`identity_scheme`),
    ``"henaff"`` and ``"cayley"`` (random orthogonal recurrent blocks, :func:`henaff_`,
    :func:`cayley_`), ``"chrono"`` (LSTM/GRU gate biases, :func:`chrono_`; needs
    ``max_length``), ``"forget-bias"`` (LSTM forget-gate bias, :func:`forget_bias_`) and
    ``"indrnn"`` (IndRNN as published, :func:`indrnn_scheme`; needs ``max_length``).

    Args:
        module: the module whose recurrent layers to initialise (searched recursively).
        scheme: name of the scheme in :data:`INITS`.
        gain: scale of each orthogonal gate block (``"orthogonal"``).
        scale: diagonal of each identity gate block (``"identity"``).
        input_std: standard deviation of the input weights (``"identity"``).
        generator: the random number generator to sample from, for reproducible draws.
        max_length: :math:`T_\max` of ``"chrono"`` (required there).
        forget_bias: the LSTM forget-gate bias of ``"forget-bias"``.

    Returns:
        ``module``.

    Raises:
        ValueError: if ``scheme`` is unknown (the message suggests the closest name),
            ``input_std`` is negative or not finite, ``module`` has no recurrent weight, or
            the scheme does not fit a layer (``"chrono"`` without ``max_length``, a gate-bias
            scheme on an Elman layer or one without bias).
    """
    apply = INITS.get(scheme)
    if not (math.isfinite(input_std) and input_std >= 0):
        raise ValueError(f"input_std must be a finite number >= 0, received {input_std!r}")
    layers = _layers_or_raise(module, "init_recurrent_")
    options = InitOptions(
        gain=gain,
        scale=scale,
        input_std=input_std,
        generator=generator,
        max_length=max_length,
        forget_bias=forget_bias,
    )
    for index, layer in enumerate(layers):
        apply(layer, replace(options, top_layer=index == len(layers) - 1))
    return module
