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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor, nn

from bptt._registry import Registry

__all__ = [
    "INITS",
    "InitOptions",
    "InitScheme",
    "RecurrentLayer",
    "default_scheme",
    "identity_",
    "identity_scheme",
    "init_recurrent_",
    "orthogonal_",
    "orthogonal_scheme",
    "recurrent_layers",
]


def _gate_block_size(tensor: Tensor, num_gates: int, caller: str) -> int:
    """Check that ``tensor`` is ``num_gates`` square blocks stacked along dim 0; return ``H``."""
    if isinstance(num_gates, bool) or not isinstance(num_gates, int) or num_gates < 1:
        raise ValueError(
            f"{caller} expected num_gates to be a positive integer (1 Elman, 3 GRU, 4 LSTM), "
            f"received {num_gates!r}"
        )
    if tensor.dim() != 2:
        raise ValueError(
            f"{caller} expected a 2-D tensor of shape (num_gates * H, H), received shape "
            f"{tuple(tensor.shape)}; pass a recurrent weight such as weight_hh"
        )
    rows, cols = tensor.shape
    if rows % num_gates != 0:
        raise ValueError(
            f"{caller} expected the {rows} rows to split into num_gates={num_gates} equal "
            f"blocks, received shape {tuple(tensor.shape)}; pass a num_gates that divides "
            f"{rows} (for a recurrent weight, num_gates = rows // columns)"
        )
    if rows // num_gates != cols:
        raise ValueError(
            f"{caller} expected each of the num_gates={num_gates} gate blocks to be square "
            f"(H, H), received blocks of shape ({rows // num_gates}, {cols}) from a tensor of "
            f"shape {tuple(tensor.shape)}; pass the recurrent weight weight_hh (not weight_ih) "
            f"and num_gates = rows // columns"
        )
    return cols


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
    size = _gate_block_size(tensor, num_gates, "orthogonal_")
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
    size = _gate_block_size(tensor, num_gates, "identity_")
    with torch.no_grad():
        eye = torch.eye(size, dtype=tensor.dtype, device=tensor.device).mul_(scale)
        tensor.copy_(eye.repeat(num_gates, 1))
    return tensor


@dataclass(frozen=True)
class RecurrentLayer:
    """The parameters of one recurrent layer (one direction), as torch names them.

    Args:
        name: qualified name of the recurrent weight in its module (e.g.
            ``"weight_hh_l1"`` or ``"cells.0.weight_hh"``), used in messages.
        weight_hh: recurrent weight, ``(G*H, H)``.
        weight_ih: input weight ``(G*H, I)``, or ``None`` if the layer has none.
        biases: the layer's ``bias_ih`` and ``bias_hh`` that exist (none if ``bias=False``).
        projection: the LSTM projection ``weight_hr`` (``proj_size > 0``), else ``None``.
    """

    name: str
    weight_hh: Tensor
    weight_ih: Tensor | None
    biases: tuple[Tensor, ...]
    projection: Tensor | None

    @property
    def num_gates(self) -> int:
        """``G = rows // columns`` of :attr:`weight_hh` (1 Elman, 3 GRU, 4 LSTM).

        Raises:
            ValueError: if :attr:`weight_hh` is not a stack of square ``(H, H)`` blocks.
        """
        if self.projection is not None:
            raise ValueError(
                f"{self.name} belongs to an LSTM with proj_size > 0, whose recurrent gate "
                f"blocks {tuple(self.weight_hh.shape)} are not square; expected proj_size=0 "
                f"for this scheme, or initialise {self.name} yourself"
            )
        shape = tuple(self.weight_hh.shape)
        if len(shape) != 2 or shape[1] == 0 or shape[0] % shape[1] != 0:
            raise ValueError(
                f"expected {self.name} to have shape (G*H, H) with G gate blocks of size "
                f"(H, H), received shape {shape}; this scheme applies to torch-layout "
                f"recurrent weights only"
            )
        return shape[0] // shape[1]


_RECURRENT_WEIGHT = re.compile(r"weight_hh(?P<suffix>_l\d+(?:_reverse)?)?")


def recurrent_layers(module: nn.Module) -> list[RecurrentLayer]:
    """Every recurrent layer in ``module``: one per parameter named ``weight_hh``,
    ``weight_hh_l<k>`` or ``weight_hh_l<k>_reverse``, with its sibling input weight and
    biases (same owner, same suffix)."""
    layers = []
    for prefix, owner in module.named_modules():
        parameters = dict(owner.named_parameters(recurse=False))
        for name, weight in parameters.items():
            match = _RECURRENT_WEIGHT.fullmatch(name)
            if match is None:
                continue
            suffix = match["suffix"] or ""
            biases = (parameters.get(f"bias_ih{suffix}"), parameters.get(f"bias_hh{suffix}"))
            layers.append(
                RecurrentLayer(
                    name=f"{prefix}.{name}" if prefix else name,
                    weight_hh=weight,
                    weight_ih=parameters.get(f"weight_ih{suffix}"),
                    biases=tuple(bias for bias in biases if bias is not None),
                    projection=parameters.get(f"weight_hr{suffix}"),
                )
            )
    return layers


@dataclass(frozen=True)
class InitOptions:
    """The settings of :func:`init_recurrent_` passed to every scheme (each uses some).

    Args:
        gain: scale of orthogonal recurrent blocks.
        scale: diagonal of identity recurrent blocks.
        input_std: standard deviation of the Gaussian input weights of ``"identity"``.
        generator: the random number generator to sample from, ``None`` for torch's global one.
    """

    gain: float = 1.0
    scale: float = 1.0
    input_std: float = 1e-3
    generator: torch.Generator | None = None


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


INITS: Registry[InitScheme] = Registry("init")
INITS.register("default", default_scheme)
INITS.register("orthogonal", orthogonal_scheme)
INITS.register("identity", identity_scheme)


def init_recurrent_(
    module: nn.Module,
    scheme: str,
    *,
    gain: float = 1.0,
    scale: float = 1.0,
    input_std: float = 1e-3,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Initialise every recurrent layer of ``module`` in place with the scheme ``scheme``.

    A recurrent layer is found by its recurrent weight, a parameter named ``weight_hh``
    (bptt cells, :class:`torch.nn.RNNCell` / ``GRUCell`` / ``LSTMCell``) or ``weight_hh_l<k>``
    (``weight_hh_l<k>_reverse``; :class:`torch.nn.RNN` / ``GRU`` / ``LSTM``); its gate count
    is :math:`G = \text{rows} / \text{columns}`, and its input weight and biases are the
    parameters of the same owner with the same suffix. The schemes are those in
    :data:`INITS`: ``"default"`` (torch's own, a no-op), ``"orthogonal"``
    (:func:`orthogonal_scheme`) and ``"identity"`` (IRNN, :func:`identity_scheme`).

    Args:
        module: the module whose recurrent layers to initialise (searched recursively).
        scheme: name of the scheme in :data:`INITS`.
        gain: scale of each orthogonal gate block (``"orthogonal"``).
        scale: diagonal of each identity gate block (``"identity"``).
        input_std: standard deviation of the input weights (``"identity"``).
        generator: the random number generator to sample from, for reproducible draws.

    Returns:
        ``module``.

    Raises:
        ValueError: if ``scheme`` is unknown (the message suggests the closest name),
            ``input_std`` is negative or not finite, or ``module`` has no recurrent weight.
    """
    apply = INITS.get(scheme)
    if not (math.isfinite(input_std) and input_std >= 0):
        raise ValueError(f"input_std must be a finite number >= 0, received {input_std!r}")
    layers = recurrent_layers(module)
    if not layers:
        found = [name for name, _ in module.named_parameters()]
        raise ValueError(
            f"init_recurrent_ expected a module with at least one recurrent weight named "
            f"'weight_hh' or 'weight_hh_l<k>' (torch's naming), received "
            f"{type(module).__name__} with parameters {found}; pass the recurrent part of "
            f"the model (e.g. model.recurrent, a torch.nn.LSTM or a bptt cell)"
        )
    options = InitOptions(gain=gain, scale=scale, input_std=input_std, generator=generator)
    for layer in layers:
        apply(layer, options)
    return module
