r"""Orthogonal matrices as functions of an unconstrained parameter (expRNN, scoRNN), and the
initial angles of the rotations they start from.

A skew-symmetric :math:`S = A - A^\top` maps to an orthogonal matrix by the matrix
exponential :math:`e^{S}` (Lezcano-Casado & Martínez-Rubio 2019) or the Cayley map
(Helfrich et al. 2018), so a gradient step on ``A`` never leaves the orthogonal group. The
:class:`bptt.cells.ExpRNNCell` is built on it, and :class:`bptt.remedies.OrthogonalConstraint`
puts it on any model's recurrent weights.
"""

from __future__ import annotations

import math
from typing import ClassVar, final

import torch
from torch import Tensor, nn

__all__ = ["SKEW_INITS", "OrthogonalBlocks", "cayley_angles", "henaff_angles", "rotation_skew"]


@final
class OrthogonalBlocks(nn.Module):
    r"""The parametrisation :math:`W_g = B_g\, \phi(A_g - A_g^\top)` for each gate block ``g``.

    ``A`` is the unconstrained parameter (only its strict upper triangle is used), so
    :math:`A - A^\top` is skew-symmetric and :math:`\phi(\cdot)` orthogonal:

    - ``"matrix_exp"``: :math:`\phi(S) = e^{S}`;
    - ``"cayley"``: :math:`\phi(S) = (I - S/2)^{-1} (I + S/2)`.

    ``B`` (a buffer) is the orthogonal matrix nearest to the weight when the
    parametrisation is registered (its polar factor), so registering keeps an orthogonal
    initialisation exactly and starts the optimisation at ``A = 0``.

    Args:
        num_blocks: the number ``G`` of ``(H, H)`` gate blocks.
        size: ``H``.
        orthogonal_map: ``"matrix_exp"`` or ``"cayley"``.
    """

    MAPS: ClassVar[tuple[str, ...]] = ("matrix_exp", "cayley")

    def __init__(self, num_blocks: int, size: int, orthogonal_map: str = "matrix_exp") -> None:
        super().__init__()
        if orthogonal_map not in self.MAPS:
            raise ValueError(f"orthogonal_map must be one of {self.MAPS}, got {orthogonal_map!r}")
        self.num_blocks, self.size, self.orthogonal_map = num_blocks, size, orthogonal_map
        self.register_buffer("base", torch.eye(size).repeat(num_blocks, 1, 1))

    def forward(self, raw: Tensor) -> Tensor:
        upper = raw.unflatten(0, (self.num_blocks, self.size)).triu(1)
        skew = upper - upper.mT
        if self.orthogonal_map == "matrix_exp":
            rotation = torch.linalg.matrix_exp(skew)
        else:
            eye = torch.eye(self.size, dtype=raw.dtype, device=raw.device)
            rotation = torch.linalg.solve(eye - skew / 2, eye + skew / 2)
        return (self.base.to(raw.dtype) @ rotation).flatten(0, 1)

    @torch.no_grad()
    def right_inverse(self, weight: Tensor) -> Tensor:
        """Store the polar factor of each block of ``weight`` as ``B`` and start at ``A = 0``."""
        u, _, vh = torch.linalg.svd(weight.unflatten(0, (self.num_blocks, self.size)))
        self.base = (u @ vh).to(self.base.dtype)
        return torch.zeros_like(weight)

    def extra_repr(self) -> str:
        return f"num_blocks={self.num_blocks}, size={self.size}, map={self.orthogonal_map!r}"


def henaff_angles(count: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Rotation angles :math:`\theta \sim U(-\pi, \pi)` (Henaff et al. 2016): the eigenvalues
    :math:`e^{\pm i\theta}` of :math:`e^{S}` spread evenly over the unit circle."""
    return (torch.rand(count, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi


def cayley_angles(count: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Skew entries :math:`-\sqrt{(1 - \cos s) / (1 + \cos s)} = -\tan(s/2)`,
    :math:`s \sim U(0, \pi/2)` (Helfrich et al. 2018's Cayley initialisation)."""
    s = torch.rand(count, generator=generator, dtype=torch.float64) * (math.pi / 2)
    return -torch.sqrt((1 - torch.cos(s)) / (1 + torch.cos(s)))


SKEW_INITS = {"henaff": henaff_angles, "cayley": cayley_angles}
"""The named distributions of the 2 x 2 rotation blocks a skew-symmetric parameter starts from."""


def rotation_skew(size: int, init: str, generator: torch.Generator | None = None) -> Tensor:
    r"""A block-diagonal skew-symmetric ``(size, size)`` matrix of 2 x 2 blocks
    :math:`\begin{pmatrix} 0 & a \\ -a & 0 \end{pmatrix}`, ``a`` drawn from ``SKEW_INITS[init]``
    (a last 1 x 1 block is 0 when ``size`` is odd), in float64.

    Raises:
        ValueError: for an unknown ``init``.
    """
    if init not in SKEW_INITS:
        raise ValueError(f"expected a skew initialisation in {sorted(SKEW_INITS)}, received {init!r}")
    angles = SKEW_INITS[init](size // 2, generator)
    skew = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(0, 2 * (size // 2), 2)
    skew[rows, rows + 1] = angles
    skew[rows + 1, rows] = -angles
    return skew
