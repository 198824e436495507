"""Orthonormal DCT-II matrices (pure functions), shared by the block DCT and the adaptive loss."""

from __future__ import annotations

import math

import torch


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``A`` of size (n, n): ``A @ x`` is the DCT of the vector ``x``.

    ``A[k, i] = s_k cos(pi (2 i + 1) k / (2 n))`` with ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``;
    ``A`` is orthogonal, so the inverse DCT is ``A.T``. Computed in float64 on the CPU, then cast and
    moved to ``device`` (``None``: the CPU).
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    # on the CPU explicitly, then moved: a `with torch.device(...)` context (e.g. meta) must not make
    # the values themselves data-less
    k = torch.arange(n, dtype=torch.float64, device="cpu").view(-1, 1)
    i = torch.arange(n, dtype=torch.float64, device="cpu").view(1, -1)
    a = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    a[0] /= math.sqrt(2.0)
    return a.to(dtype=dtype, device=device)
