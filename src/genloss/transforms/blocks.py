"""Block transforms (pure functions): split images into BxB blocks, block DCT and block real DFT.

Both transforms are written as one matrix product per block (a (B*B) x (B*B) matrix for the DCT,
(B*B) x (2*B*(B//2+1)) for the real DFT), which on CPU and GPU is faster than ``unfold`` plus two
small matmuls or a batched FFT over 8x8 blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .dct import dct_matrix


def pad_to_multiple(x: torch.Tensor, block: int, mode: str = "replicate") -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right so that H and W are multiples of ``block``.

    Replicate padding repeats the last row/column: the padded pixels carry the same error as
    the border, so every input pixel still receives a gradient (cropping would drop the border).
    """
    h, w = x.shape[-2:]
    # ceil division, not (-h) % block: with symbolic sizes (torch.compile's dynamic shapes) a Mod
    # sent inductor's index simplification into minutes of sympy (Watson-DFT in training mode)
    ph, pw = -(-h // block) * block - h, -(-w // block) * block - w
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def to_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """(N, C, H, W) with H, W multiples of ``block`` -> (N, C, K, block*block), K = (H/b)(W/b).

    Blocks are ordered row-major over the image (as ``unfold``), pixels row-major within a block.
    """
    n, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"image size {h}x{w} is not a multiple of the block size {block}")
    x = x.reshape(n, c, h // block, block, w // block, block).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(n, c, (h // block) * (w // block), block * block)


# The matrices are built anew on every call (microseconds; only module constructors call them) and
# explicitly on the CPU: a cache, or a factory call that follows the default device, would let a module
# built under ``torch.device("meta")`` or a FakeTensorMode hand data-less matrices to later real ones.
def _block_dct_matrix_f64(block: int) -> torch.Tensor:
    a = dct_matrix(block, dtype=torch.float64, device="cpu")
    # vec(A X A^T) = (A kron A) vec(X) for row-major vec; we multiply rows: x @ M with M = (A kron A)^T
    return torch.kron(a, a).t().contiguous()


def block_dct_matrix(block: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(b*b, b*b) matrix ``M`` with ``blocks @ M`` = orthonormal 2-D DCT-II of each row-major block."""
    return _block_dct_matrix_f64(block).to(dtype=dtype, device=device)


def _block_rdft_matrix_f64(block: int) -> torch.Tensor:
    k = block // 2 + 1
    u = torch.arange(block, dtype=torch.float64, device="cpu")  # frequency along rows (height)
    v = torch.arange(k, dtype=torch.float64, device="cpu")  # frequency along columns (width), one-sided
    y = torch.arange(block, dtype=torch.float64, device="cpu")
    x = torch.arange(block, dtype=torch.float64, device="cpu")
    # phase[u, v, y, x] = 2 pi (u y + v x) / b
    phase = 2 * math.pi * (u.view(-1, 1, 1, 1) * y.view(1, 1, -1, 1) + v.view(1, -1, 1, 1) * x.view(1, 1, 1, -1))
    phase = phase / block
    re = torch.cos(phase).reshape(block * k, block * block)
    im = -torch.sin(phase).reshape(block * k, block * block)
    return torch.cat([re, im], 0).t().contiguous()  # (b*b, 2*b*k)


def block_rdft_matrix(block: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(b*b, 2*b*(b//2+1)) matrix: ``blocks @ M`` = [real | imag] of ``torch.fft.rfft2`` of each block.

    Unnormalised like ``rfft2`` (divide by b*b for the Watson paper's normalisation).
    """
    return _block_rdft_matrix_f64(block).to(dtype=dtype, device=device)
