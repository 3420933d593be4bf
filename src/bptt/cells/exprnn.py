r"""The expRNN cell: an orthogonal recurrent matrix and the modReLU nonlinearity."""

from __future__ import annotations

from typing import ClassVar, final

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from bptt.cells.base import AbstractCell, State
from bptt.orthogonal import SKEW_INITS, OrthogonalBlocks, rotation_skew

__all__ = ["ExpRNNCell", "modrelu", "modrelu_derivative"]


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    r""":math:`\mathrm{modReLU}(z) = \mathrm{sign}(z)\, \mathrm{relu}(|z| + b)` (Arjovsky et al. 2016).

    It keeps the sign of each pre-activation and shrinks its magnitude by ``-b``; its
    derivative is :math:`\mathbf{1}[|z| + b > 0]` (:func:`modrelu_derivative`), exactly 1
    on active units, so an orthogonal :math:`W_{hh}` gives :math:`\|J_t\| \le 1` with equality
    while every unit is active.

    Shape:
        - z: ``(*, H)``; bias: ``(H,)``; returns ``(*, H)``.
    """
    return torch.sign(z) * torch.relu(z.abs() + bias)


def modrelu_derivative(z: Tensor, bias: Tensor) -> Tensor:
    r""":math:`\partial\, \mathrm{modReLU}(z) / \partial z = \mathbf{1}[|z| + b > 0]` (``z != 0``)."""
    return ((z.abs() + bias) > 0).to(z.dtype)


@final
class ExpRNNCell(AbstractCell):
    r"""The expRNN step (Lezcano-Casado & Martínez-Rubio 2019).

    .. math::
        z_t = W_{ih} x_t + B\, h_{t-1}, \qquad h_t = \mathrm{modReLU}(z_t)
            = \mathrm{sign}(z_t) \odot \mathrm{relu}(|z_t| + b)

    with the recurrent matrix ``weight_hh`` :math:`= B = B_0\, \phi(A - A^\top)` orthogonal
    at every step of training: :math:`\phi` is the matrix exponential (``"matrix_exp"``) or
    the Cayley map (``"cayley"``), ``A`` the unconstrained parameter
    ``parametrizations.weight_hh.original`` and :math:`B_0 = I`
    (:class:`bptt.orthogonal.OrthogonalBlocks`). The step Jacobian is
    :math:`J_t = \mathrm{diag}(\mathbf{1}[|z_t| + b > 0])\, B`: its singular values are 1
    on the active units and 0 on the others, so the gradient neither explodes nor decays
    through active units, however long the sequence. modReLU matters: with tanh the copy
    task is not solved (Kerg et al. 2019's supplement).

    ``A`` starts as a block-diagonal rotation generator (``init``): ``"henaff"`` angles
    :math:`U(-\pi, \pi)` (the paper's default for copy memory) or ``"cayley"`` (Helfrich et
    al. 2018). ``A`` trains at a tenth of the learning rate by default
    (:attr:`slow_parameters`; the paper: RMSprop 2e-4, and 2e-5 for ``A``). ``W_ih`` is
    Kaiming-normal (ReLU gain) and the modReLU bias ``b`` is :math:`U(-0.01, 0.01)`, as in
    the paper's code. There are no ``bias_ih`` / ``bias_hh``: ``b`` is the bias.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        orthogonal_map: ``"matrix_exp"`` (default) or ``"cayley"``.
        init: ``"henaff"`` (default) or ``"cayley"``.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    num_gates: ClassVar[int] = 1
    gate_activations: ClassVar[dict[str, str]] = {"z": "none"}
    slow_parameters: ClassVar[dict[str, float]] = {"parametrizations.weight_hh.original": 0.1}

    def __init__(
        self, input_size: int, hidden_size: int, orthogonal_map: str = "matrix_exp", init: str = "henaff"
    ) -> None:
        if orthogonal_map not in OrthogonalBlocks.MAPS:
            raise ValueError(
                f"expected orthogonal_map in {OrthogonalBlocks.MAPS}, received {orthogonal_map!r}"
            )
        if init not in SKEW_INITS:
            raise ValueError(f"expected init in {sorted(SKEW_INITS)}, received {init!r}")
        self.orthogonal_map, self.init = orthogonal_map, init
        super().__init__(input_size, hidden_size, bias=False)

    def extra_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The modReLU bias ``modrelu_bias``, ``(H,)``."""
        return {"modrelu_bias": (self.hidden_size,)}

    def reset_parameters(self) -> None:
        """Kaiming-normal ``W_ih``, ``b`` ~ U(-0.01, 0.01), ``A`` from :attr:`init`, :math:`B_0 = I`."""
        nn.init.kaiming_normal_(self.weight_ih, nonlinearity="relu")
        nn.init.uniform_(self.modrelu_bias, -0.01, 0.01)
        if parametrize.is_parametrized(self, "weight_hh"):
            parametrize.remove_parametrizations(self, "weight_hh", leave_parametrized=False)
        with torch.no_grad():
            self.weight_hh.copy_(torch.eye(self.hidden_size))
        parametrize.register_parametrization(
            self, "weight_hh", OrthogonalBlocks(1, self.hidden_size, self.orthogonal_map)
        )
        with torch.no_grad():
            skew = rotation_skew(self.hidden_size, self.init)
            self.parametrizations.weight_hh.original.copy_(skew.triu(1))

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> dict[str, Tensor]:
        return {"z": input_part + recurrent_part}

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> Tensor:
        return modrelu(input_part + recurrent_part, self.modrelu_bias)

    def derivative(self, z: Tensor) -> Tensor:
        """modReLU's derivative at ``z`` with this cell's bias (:func:`modrelu_derivative`)."""
        return modrelu_derivative(z, self.modrelu_bias)

    def slope(self, gates: dict[str, Tensor]) -> Tensor:
        return self.derivative(gates["z"])

    @property
    def piecewise_linear(self) -> bool:
        return True

    def orthogonality_error(self) -> float:
        r""":math:`\|B^\top B - I\|_{\max}`, the largest entry of the recurrent matrix's departure
        from orthogonality (float32 rounding alone gives about 1e-6)."""
        with torch.no_grad():
            weight = self.weight_hh
            eye = torch.eye(self.hidden_size, dtype=weight.dtype, device=weight.device)
            return float((weight.T @ weight - eye).abs().max())

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, orthogonal_map={self.orthogonal_map!r}, "
            f"init={self.init!r}, modrelu_bias=True"
        )

