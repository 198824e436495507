"""Hand-written forward/backward of Watson's pooling for the common case of a frozen metric.

When the target and the parameters need no gradient (a tuned loss used to train a generator),
the only gradient path is input -> coefficients -> pooled distance. Autograd would store and
replay a dozen full-size intermediates; these ``autograd.Function`` s keep only what the
backward needs and compute it in a few fused passes (about 2-3x faster on CPU, less memory).
The backwards are not differentiable themselves: ``create_graph=True`` raises an error instead of
giving a silently wrong second derivative; set ``loss.fast_backward = False`` for double backward.
The op order of the phase term follows autograd's formulas, because its ``acos`` near 1 is
sensitive to float32 rounding and the gradients should match the paper's code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._validation import in_functorch_transform
from ._pieces import backward_in_pieces, forward_in_pieces

#: the epsilon of the paper's code, kept for fidelity (it also keeps gradients finite at 0)
EPS = 1e-10


def _reuse(buffer: torch.Tensor) -> torch.Tensor | None:
    """``out=`` target for a temporary that is free again: the buffer in eager mode, ``None``
    (a fresh tensor) under ``torch.compile``, which allocates and fuses by itself and does not trace
    ``out=`` into non-contiguous tensors."""
    return None if torch.compiler.is_compiling() else buffer


def _no_double_backward() -> None:
    # Under create_graph=True autograd runs backward with grad mode on: refuse rather than return a
    # gradient whose own derivative would silently be missing.
    if torch.is_grad_enabled():
        raise RuntimeError(
            "the fast Watson backward is not twice differentiable (create_graph=True); "
            "set loss.fast_backward = False to use plain autograd"
        )


def positive_pow(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``x ** exponent`` for ``x > 0`` as ``exp(exponent * log(x))`` (differentiable, out of place).

    ATen's CPU ``pow`` with a tensor exponent runs about twice as long as ``log``, ``mul`` and ``exp``
    together (1.8 ms against 0.9 ms on 1.5 M float32 values, 2 threads); the relative difference
    of the two is a few float32 ulps times ``|exponent * log(x)|`` (below 1e-5 for Watson's
    operands, 1e-14 in float64).
    """
    return torch.exp(torch.log(x) * exponent)


def _pool_forward(d: torch.Tensor, inv_s: torch.Tensor, beta: torch.Tensor,
                  scratch: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Minkowski pooling over (K, F) of (N, C, K, F) differences ``d``, with its gradient factor.

    ``q = |d| / s + EPS``, ``S = sum(q**beta + EPS)``, ``D = S**(1/beta)`` (N, C). Returns D, S and
    ``g = q**(beta-1) sign(d) / s`` (N, C, K, F), so that ``dD/dd = S**(1/beta-1) g``: the backward is
    one multiplication and only g is kept (not d, q and 1/s). ``d`` is overwritten; ``scratch``: two
    free tensors of ``d``'s shape for the temporaries (g is then the second), instead of fresh ones.
    """
    b = beta.view(1, -1, 1, 1)
    e = d.mul_(inv_s)
    q = torch.abs(e, out=None if scratch is None else scratch[0]).add_(EPS)
    p = torch.log(q, out=None if scratch is None else scratch[1]).mul_(b - 1).exp_()  # q**(beta-1), see positive_pow
    total = q.mul_(p).sum(dim=(2, 3)) + EPS * (d.shape[2] * d.shape[3])
    g = p.mul_(inv_s).mul_(e.sign_())
    return total.pow(1 / beta.view(1, -1)), total, g


def _pool_coef(grad: torch.Tensor, total: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The per-image factor ``grad S**(1/beta-1)`` of the pooling's gradient, (N, C, 1, 1)."""
    return (grad * total.pow(1 / beta.view(1, -1) - 1)).unsqueeze(-1).unsqueeze(-1)


def block_dft_fft(rows: torch.Tensor, block: int) -> torch.Tensor:
    """``[real | imag]`` (..., 2F) of the rfft2 / B*B of each block row (..., B*B), by FFT.

    Unlike a GEMM with the DFT matrix, the FFT's butterflies give exact zeros for every block that is
    constant along its rows or its columns (in any precision): such coefficients vanish in exact
    arithmetic, and Watson-DFT's phase needs them to (see ``WatsonDFT._exact_transform``). The
    1/B*B is applied to the real input (exact: a power of 2; ``norm="forward"`` is 4x slower on CPU).
    """
    lead = rows.shape[:-1]
    spec = torch.fft.rfft2((rows * (1.0 / block**2)).reshape(*lead, block, block))
    # (..., B, B//2+1) complex -> (..., F, 2) -> (..., 2, F) -> [re | im], one copy (reshape, not
    # flatten: torch.autograd.functional's vectorised Jacobians cannot batch flatten here)
    return torch.view_as_real(spec).reshape(*lead, -1, 2).transpose(-1, -2).reshape(*lead, -1)


class BlockDFT(torch.autograd.Function):
    """:func:`block_dft_fft` whose backward is the GEMM with the transposed DFT matrix ``basis`` (B*B, 2F).

    The backward of a linear map needs no exact zeros (the gradient with respect to a vanishing
    coefficient is itself exactly zero), and the GEMM is about 2x faster than autograd's FFT backward
    on CPU. Under ``create_graph=True`` the backward's own backward runs this FFT again
    (:class:`BlockDFTAdjoint`), so second derivatives keep the exact zeros too.
    """

    @staticmethod
    def forward(ctx, rows, basis, block: int):
        ctx.save_for_backward(basis)
        ctx.basis, ctx.block = basis, block  # (for jvp: forward-mode AD)
        return block_dft_fft(rows, block)

    @staticmethod
    def backward(ctx, grad):
        (basis,) = ctx.saved_tensors
        return BlockDFTAdjoint.apply(grad, basis, ctx.block), None, None

    @staticmethod
    def jvp(ctx, rows_tangent, basis_tangent, block_tangent):
        return BlockDFT.apply(rows_tangent, ctx.basis, ctx.block)  # a linear map: its own derivative


class BlockDFTAdjoint(torch.autograd.Function):
    """The transpose of :class:`BlockDFT` (``grad @ basis^T``); its own backward is :class:`BlockDFT`."""

    @staticmethod
    def forward(ctx, grad, basis, block: int):
        ctx.save_for_backward(basis)
        ctx.basis, ctx.block = basis, block
        return grad @ basis.t()

    @staticmethod
    def backward(ctx, grad):
        (basis,) = ctx.saved_tensors
        return BlockDFT.apply(grad, basis, ctx.block), None, None

    @staticmethod
    def jvp(ctx, grad_tangent, basis_tangent, block_tangent):
        return BlockDFTAdjoint.apply(grad_tangent, ctx.basis, ctx.block)


class WatsonPoolDCT(torch.autograd.Function):
    """D(c1) = Minkowski pooling of (c0 - c1) / s; gradient only with respect to c1."""

    @staticmethod
    def forward(ctx, c1, c0, inv_s, beta):
        # c0 is the target's transform, made for this call only: its buffer becomes the difference
        dist, total, g = _pool_forward(c0.sub_(c1), inv_s, beta)
        ctx.save_for_backward(g, total, beta)
        return dist

    @staticmethod
    def backward(ctx, grad):
        _no_double_backward()
        g, total, beta = ctx.saved_tensors
        return g * _pool_coef(-grad, total, beta), None, None, None


class BlockPlan(NamedTuple):
    """How :func:`coefficients_into` maps an image to Watson's block coefficients (and back).

    ``mix``: (C, C_in) colour product, or ``None`` (the image's channels as they are); ``basis``:
    (B*B, F) block transform with F >= B*B; ``offset``: (C, J) added to the first J coefficients of
    every block (the YCbCr offset on the DC), or ``None``; ``index``: the gather index of the shifted
    or padded block rows (``watson._shift_index``), or ``None`` when H and W are multiples of B.
    ``differences`` (:func:`spectrum_into` only): (C, 3), the colour product of
    ``(R, G - R, B - R)`` that the forward uses instead of ``mix`` (exact zeros for grey pixels, see
    ``WatsonDFT._exact_transform``), or ``None``; ``mix`` is then the same product in plain form,
    for the backward.
    """

    mix: torch.Tensor | None
    basis: torch.Tensor
    offset: torch.Tensor | None
    block: int
    index: torch.Tensor | None
    differences: torch.Tensor | None = None


def coefficients_into(x: torch.Tensor, plan: BlockPlan, rows_out: torch.Tensor | None = None):
    """(N, C_in, H, W) -> block coefficients z (N, C, K, F) and the block rows (N, C, K, B*B), no graph.

    The same map as ``_WatsonBase._transform``, in two fresh tensors instead of three: z is written
    into the buffer that first held the colour product, and the rows go to ``rows_out`` if given (a
    free tensor of at least their size); they are returned for the caller to reuse as scratch.
    """
    n, _, h, w = x.shape
    b = plan.block
    c = x.shape[1] if plan.mix is None else plan.mix.shape[0]
    f = plan.basis.shape[1]
    k = -(-h // b) * -(-w // b)
    buffer = torch.empty(n * c * k * f, dtype=x.dtype, device=x.device)
    pixels = x
    if plan.mix is not None:
        pixels = torch.matmul(plan.mix, x.reshape(n, -1, h * w), out=buffer[: n * c * h * w].view(n, c, h * w))
    if rows_out is None:
        rows_out = torch.empty(n * c * k * b * b, dtype=x.dtype, device=x.device)
    rows = _gather_rows(pixels, plan, rows_out, h, w)
    z = torch.matmul(rows, plan.basis, out=buffer.view(n, c, k, f))
    if plan.offset is not None:
        z[..., : plan.offset.shape[-1]] += plan.offset.unsqueeze(1)
    return z, rows


def _gather_rows(pixels: torch.Tensor, plan: BlockPlan, out: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixels (N, C, H*W) -> their block rows (N, C, K, B*B), written into the start of ``out`` (a free tensor)."""
    n, c = pixels.shape[:2]
    b = plan.block
    k = -(-h // b) * -(-w // b)
    rows = out.view(-1)[: n * c * k * b * b].view(n, c, k, b * b)
    if plan.index is None:  # H, W multiples of B: the blocks are a permutation of the pixels
        blocks = pixels.reshape(n, c, h // b, b, w // b, b).permute(0, 1, 2, 4, 3, 5)
        rows.view(n, c, h // b, w // b, b, b).copy_(blocks)
    else:
        torch.index_select(pixels.reshape(n, -1), 1, plan.index, out=rows.view(n, -1))
    return rows


def coefficients_adjoint(grad: torch.Tensor, plan: BlockPlan, shape: torch.Size,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """The transpose of :func:`coefficients_into`: a gradient (N, C, K, F) of z -> (N, C_in, H, W) of x.

    ``grad`` must be a fresh contiguous tensor of the caller's: it is overwritten (it holds the
    pixels' gradient before the colour product's transpose, if there is one). ``out``: a contiguous
    tensor of ``shape`` for the result, else a fresh one.
    """
    n, c_in, h, w = shape
    b = plan.block
    c = grad.shape[1]
    rows = torch.matmul(grad, plan.basis.t())  # (N, C, K, B*B)
    # the pixels' gradient: written into the caller's out (no colour product) or into grad's buffer;
    # a fresh tensor of its own under batched gradients (vmap refuses in-place writes of batched
    # values into an unbatched tensor) or without out
    batched = in_functorch_transform(grad)
    if plan.mix is not None:
        pixels = None if batched else grad.view(-1)[: n * c * h * w].view(n, c, h * w)
    else:
        pixels = None if batched or out is None else out.view(n, c, h * w)
    if plan.index is None:
        blocks = rows.view(n, c, h // b, w // b, b, b).permute(0, 1, 2, 4, 3, 5)
        if pixels is None:
            pixels = blocks.reshape(n, c, h * w)  # (a copy)
        else:
            pixels.view(n, c, h // b, b, w // b, b).copy_(blocks)
    elif pixels is None:  # padded and shifted rows repeat pixels: their gradients add up
        pixels = rows.new_zeros(n, c * h * w).index_add(1, plan.index, rows.view(n, -1)).view(n, c, h * w)
    else:
        pixels.view(n, -1).zero_().index_add_(1, plan.index, rows.view(n, -1))
    if plan.mix is None:
        return pixels.view(n, c_in, h, w)
    out = None if out is None or batched else out.view(n, c_in, h * w)
    return torch.matmul(plan.mix.t(), pixels, out=out).view(n, c_in, h, w)


class FrozenWatsonDCT(torch.autograd.Function):
    """Watson-DCT of a frozen metric as one Function: both transforms, thresholds, pooling; gradient to the input.

    ``forward(x, target, beta, plan, thresholds, splittable)`` with a ``plan`` whose basis is square
    (F = B*B: the DCT; its buffers hold the pooling's temporaries) and ``thresholds(dc, amp0_eps)
    -> 1 / s`` (the module's masking, overwriting ``amp0_eps``; its result is a fresh tensor).
    Returns (N, C) distances. Autograd through the transforms would allocate every intermediate anew
    and keep some for backward; here a piece of the batch needs four full-size tensors in forward
    and three in backward, and the rest reuse them. On the CPU every fresh full-size tensor is paid
    again in page faults (memory freed at the end of a call goes back to the system), which was
    about a quarter of Watson-DCT's time at 128x3x64x64. ``splittable``: each image's distance
    depends on that image pair alone (not with the faithful batch-wide luminance mean), so the
    batch is computed in pieces (``_pieces.CHUNK_VALUES``). The same numbers as the autograd path (tested).
    """

    @staticmethod
    def forward(ctx, x, target, beta, plan, thresholds, splittable: bool):
        def piece(x, target, scratch):
            c0, spare = coefficients_into(target, plan)
            inv_s = thresholds(c0[..., 0], torch.abs(c0, out=spare).add_(EPS))  # spare is free again
            c1, rows = coefficients_into(x, plan, rows_out=spare)
            dist, total, g = _pool_forward(c0.sub_(c1), inv_s, beta, scratch=(c1, rows))
            return dist, (g, total, beta), None

        ctx.plan = plan
        return forward_in_pieces(ctx, x, target, splittable, piece)

    @staticmethod
    def backward(ctx, grad):
        def piece(grad, saved, out):
            g, total, beta = saved
            return coefficients_adjoint(g * _pool_coef(-grad, total, beta), ctx.plan, (len(grad), *ctx.shape[1:]), out)

        _no_double_backward()
        return backward_in_pieces(ctx, grad, piece), None, None, None, None, None


def _spectrum_backward(grad, total, beta, amp_x, amp_y, phase_x, phase_y, out=None):
    """Gradients (re, im) of ``amplitude pooling + phase term`` from the factors kept by forward.

    ``amp_*`` is the pooling's gradient without its per-image factor ``S**(1/beta-1)``, ``phase_*``
    the phase term's gradient without the incoming gradient; both (N, C, K, F). ``out``: a
    (N, C, K, 2F) tensor that receives them as ``[re | im]`` (then returned whole).
    """
    g = grad.unsqueeze(-1).unsqueeze(-1)
    coef = _pool_coef(grad, total, beta)
    if out is None:
        return torch.addcmul(amp_x * coef, phase_x, g), torch.addcmul(amp_y * coef, phase_y, g)
    if torch.compiler.is_compiling() or in_functorch_transform(grad):  # (no out= under batched gradients)
        return torch.cat(_spectrum_backward(grad, total, beta, amp_x, amp_y, phase_x, phase_y), -1)
    re, im = _split_spectrum(out, False)
    torch.mul(amp_x, coef, out=re).addcmul_(phase_x, g)
    torch.mul(amp_y, coef, out=im).addcmul_(phase_y, g)
    return out


def _split_spectrum(z: torch.Tensor, interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the real and imaginary parts (..., F) of a spectrum (..., 2F) laid out as
    ``(re, im)`` pairs (``interleaved``: ``torch.view_as_real``'s layout) or as ``[re | im]``."""
    if interleaved:
        return z[..., 0::2], z[..., 1::2]
    f = z.shape[-1] // 2
    return z[..., :f], z[..., f:]


def amplitude(x: torch.Tensor, y: torch.Tensor, xx: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt(x**2 + y**2)``, differentiable and vmap-able (``hypot`` is 2x slower on CPU).

    ``xx``: ``x * x`` when the caller has it already (it is not changed).
    """
    return torch.addcmul(x * x if xx is None else xx, y, y).sqrt_()


def _amplitude_forward(amp0, x, y, inv_s, beta, xx=None):
    """Pooled amplitude distance of the input spectrum ``(x, y)`` (EPS already added): D, S, dD/dx, dD/dy.

    The gradients are without the per-image factor ``S**(1/beta-1)`` (see :func:`_pool_forward`).
    ``xx``: ``x * x``, if the caller needs it too.
    """
    amp1 = amplitude(x, y, xx)
    dist, total, g = _pool_forward(amp0 - amp1, inv_s, beta)
    h = g.div_(amp1).neg_()  # d = amp0 - amp1
    return dist, total, h * x, h.mul_(y)


class WatsonDFTInput(torch.autograd.Function):
    """Amplitude pooling plus weighted phase distance of the input spectrum (re1, im1), the paper's formulas.

    ``ref``: amp0, inv_s, ph0 of the target; ``w_phase`` (C, F); ``k`` = 1 - 1e-7.
    Returns (N, C) distances; gradients with respect to re1 and im1 only. The phase factors are
    computed as autograd computes them for the paper's ``acos(cos(ph0 - ph1) k)``, because that
    expression is sensitive to float32 rounding near aligned phases and the gradients should
    match the paper's code.
    """

    @staticmethod
    def forward(ctx, re1, im1, amp0, inv_s, ph0, beta, w_phase, k: float):
        x1 = re1 + EPS
        dist, total, amp_x, amp_y = _amplitude_forward(amp0, x1, im1 + EPS, inv_s, beta)
        diff = ph0 - torch.atan2(im1, x1)
        u = torch.cos(diff).mul_(k)
        wp = w_phase.unsqueeze(1).unsqueeze(0)
        phase = (torch.acos(u).sum(2) * w_phase).sum(-1)
        # acos' = -rsqrt(1 - u^2), cos' = -sin, d(diff)/d(ph1) = -1, atan2' = (-im1, x1) / (im1^2 + x1^2)
        p = (-u * u + 1).rsqrt_().neg_().mul_(wp).mul_(k).mul_(torch.sin(diff)).div_(im1 * im1 + x1 * x1)
        ctx.save_for_backward(total, beta, amp_x, amp_y, p * -im1, p.mul_(x1))
        return dist + phase

    @staticmethod
    def backward(ctx, grad):
        _no_double_backward()
        return (*_spectrum_backward(grad, *ctx.saved_tensors), None, None, None, None, None, None)


def _stable_forward(re1, im1, amp0, inv_s, u0, v0, beta, w_phase, k: float):
    """Forward of :class:`WatsonDFTStable` on the input spectrum's parts (re1, im1) (N, C, K, F) (views,
    not changed): the (N, C) distances and the six tensors its backward (:func:`_spectrum_backward`) needs."""
    x = re1 + EPS
    xx = x * x  # for both the amplitude (with EPS on im1, as the paper) and the phase's radius (without)
    dist, total, amp_x, amp_y = _amplitude_forward(amp0, x, im1 + EPS, inv_s, beta, xx)
    r = xx.addcmul_(im1, im1).sqrt_().clamp_min_(1e-30)
    u1 = x.div_(r)
    v1 = im1 / r
    # cos d and sin d of the angle d between the unit vectors n0 = (u0, v0) and n1 = (u1, v1); sin d from
    # two separately rounded products, so that it is exactly 0 for equal phases (a fused multiply-add
    # leaves the rounding error of u0 v1, which the 1/z of the gradient factor magnifies ~5000x: an
    # input block equal to its target got a gradient)
    cos = torch.mul(u0, u1).addcmul_(v0, v1)
    sin = torch.mul(u0, v1).sub_(torch.mul(v0, u1))
    sgn = torch.sign(cos)  # +1 below pi/2, -1 above, 0 at pi/2
    # z^2 = (1 - k)/2 + k c/4 with c = min(|n0 - n1|^2, |n0 + n1|^2), the squared chord to the
    # nearer of n1 and -n1, for unit vectors 2 sin^2 d / (1 + |cos d|): no cancellation near d = 0 or pi
    zz = torch.mul(sin, sin).mul_(2).div_(cos.abs_().add_(1)).mul_(k / 4).add_((1 - k) / 2)
    z = torch.sqrt(zz)
    # angle = 2 asin(z) below pi/2, pi - 2 asin(z) above, i.e. 2 asin(z) sgn + pi/2 (1 - sgn)
    # (at exactly pi/2 both give pi/2), so the sum over blocks needs only the block sums of the
    # two factors: no torch.where (4x slower on CPU) and no full-size mask or count
    signed = torch.asin(z, out=_reuse(cos)).mul_(2).mul_(sgn)
    blocks = signed.shape[2]
    phase = ((signed.sum(2) + (math.pi / 2) * (blocks - sgn.sum(2))) * w_phase).sum(-1)
    # the phase factor -(k/2) w sin(d) / (r z sqrt(1 - z^2))
    den = zz.neg_().add_(1).sqrt_().mul_(z).mul_(r)
    p = sin.div_(den).mul_(w_phase.unsqueeze(1).unsqueeze(0) * (-k / 2))
    return dist + phase, (total, beta, amp_x, amp_y, p * v1, p.mul_(u1).neg_())


class WatsonDFTStable(torch.autograd.Function):
    """Amplitude pooling plus the numerically stable phase distance (see ``stable_phase_angle``).

    Inputs: the input spectrum ``z1`` (N, C, K, 2F) as ``[re | im]``; target side ``amp0``,
    ``inv_s`` and the target's unit phase vectors ``u0``, ``v0`` (N, C, K, F); ``beta`` (C,),
    ``w_phase`` (C, F), ``k``. The gradient with respect to ``z1`` only, written out by hand: with
    ``angle = 2 asin(z)`` (or ``pi - 2 asin(z)`` above pi/2), ``z = sqrt((1 - k)/2 + k chord/4)``
    and the squared chord ``|n0 -+ n1|^2 = 2 sin^2 d / (1 +- cos d)`` of the unit vectors ``n = (x, y) / r``,
    ``d angle / d(x, y) = -(k/2) (u0 v1 - v0 u1) / (r z sqrt(1 - z^2)) * (v1, -u1)``
    (the two signs of the far case cancel). Forward computes these factors, so backward is two
    multiply-adds into one gradient tensor laid out as ``z1``, and only four (N, C, K, F) tensors
    are kept. Eager frozen calls take :class:`FrozenWatsonDFT`, which runs the same forward
    (:func:`_stable_forward`) inside one Function with both transforms; this one serves
    ``torch.compile``, which traces it (the compiler allocates by itself: ``_reuse`` gives it fresh
    tensors).
    """

    @staticmethod
    def forward(ctx, z1, amp0, inv_s, u0, v0, beta, w_phase, k: float):
        dist, saved = _stable_forward(*_split_spectrum(z1, False), amp0, inv_s, u0, v0, beta, w_phase, k)
        ctx.save_for_backward(*saved)
        ctx.layout = (z1.shape, z1.stride())
        return dist

    @staticmethod
    def backward(ctx, grad):
        _no_double_backward()
        shape, stride = ctx.layout
        saved = ctx.saved_tensors
        out = torch.empty_strided(shape, stride, dtype=saved[2].dtype, device=saved[2].device)
        return (_spectrum_backward(grad, *saved, out=out), None, None, None, None, None, None, None)


def spectrum_into(x: torch.Tensor, plan: BlockPlan, scratch: tuple[torch.Tensor, torch.Tensor] | None = None):
    """(N, C_in, H, W) -> block spectra z (N, C, K, 2F) as ``(re, im)`` pairs (``view_as_real``), no graph.

    The map of ``WatsonDFT._transform`` (colour product, in difference form if ``plan.differences``
    is given, block rows, rfft2 of each block, YCbCr offset on the DC), with the 1/B*B of the
    transform folded into the colour matrix: ``plan.mix`` (C, C_in), never ``None`` here (a (1, 1)
    matrix 1/B*B for 1-channel input), is already divided by B*B, which is exact (a power of 2), so
    every value equals the unfolded one bit for bit. The layout of ``torch.fft`` is kept (the
    ``[re | im]`` copy of :func:`block_dft_fft` costs about as much as the FFT). ``scratch``: the two
    free tensors this function returned before (for a batch of the same or fewer images of the same
    size); returns z and them.
    """
    n, c_in, h, w = x.shape
    b = plan.block
    c = plan.mix.shape[0]
    k = -(-h // b) * -(-w // b)
    if scratch is None:
        scratch = (torch.empty(n * max(c_in * h * w, c * k * b * b), dtype=x.dtype, device=x.device),
                   torch.empty(n * c * h * w, dtype=x.dtype, device=x.device))
    first, second = scratch
    src, mix = x.reshape(n, c_in, h * w), plan.mix
    if plan.differences is not None:  # (R, G - R, B - R): each exact, so grey pixels have exact zeros
        diff = first[: src.numel()].view(src.shape)
        diff[:, 0].copy_(src[:, 0])
        torch.sub(src[:, 1:], src[:, :1], out=diff[:, 1:])
        src, mix = diff, plan.differences
    pixels = torch.matmul(mix, src, out=second[: n * c * h * w].view(n, c, h * w))
    rows = _gather_rows(pixels, plan, first, h, w)
    z = torch.view_as_real(torch.fft.rfft2(rows.view(n, c, k, b, b))).view(n, c, k, -1)
    if plan.offset is not None:
        z[..., : plan.offset.shape[-1]] += plan.offset.unsqueeze(1)
    return z, scratch


def spectrum_reference(re0: torch.Tensor, im0: torch.Tensor, thresholds):
    """The target's factors for the input's comparison, from its spectrum (re0, im0) (N, C, K, F), no graph.

    Returns the amplitude ``amp0``, the thresholds' reciprocal ``inv_s`` (from ``thresholds(dc,
    amp0 + EPS)``, see :class:`FrozenWatsonDCT`) and the unit phase vector ``(u0, v0)``, each a
    fresh tensor; re0 and im0 are not changed. The paper adds EPS to both parts before the norm.
    """
    x0 = re0 + EPS
    xx = x0 * x0  # for the amplitude and the phase's radius
    amp0 = amplitude(x0, im0 + EPS, xx)
    inv_s = thresholds(amp0[..., 0], amp0 + EPS)
    # a zero coefficient has x0 = EPS: its unit vector is (1, 0) (the clamp: only for re0 = -EPS exactly)
    r = xx.addcmul_(im0, im0).sqrt_().clamp_min_(1e-30)
    return amp0, inv_s, x0.div_(r), im0 / r


class FrozenWatsonDFT(torch.autograd.Function):
    """Watson-DFT of a frozen metric (default mode) as one Function: both spectra, thresholds, amplitude and
    phase terms; gradient to the input.

    ``forward(x, target, beta, w_phase, plan, thresholds, k)`` with a ``plan`` for
    :func:`spectrum_into` whose ``basis`` is the unnormalised rfft2 matrix (B*B, 2F) with
    ``[re | im]`` columns (``transforms.blocks.block_rdft_matrix``; only the backward uses it, on a
    gradient laid out so; the normalisation is in ``plan.mix``), ``thresholds`` as in
    :class:`FrozenWatsonDCT`, the phase weights ``w_phase`` (C, F) and ``k`` (``PHASE_K``). Returns
    (N, C) distances, the same numbers as :class:`WatsonDFTStable` on the module's transform
    (tested). Both spectra share two scratch tensors and stay in ``torch.fft``'s ``(re, im)``
    pairs (the ``[re | im]`` copy of :func:`block_dft_fft` costs about as much as the FFT); on the
    CPU the batch is computed in pieces (``_pieces.CHUNK_VALUES``).
    """

    @staticmethod
    def forward(ctx, x, target, beta, w_phase, plan, thresholds, k: float):
        def piece(x, target, scratch):
            z0, scratch = spectrum_into(target, plan, scratch)
            ref = spectrum_reference(*_split_spectrum(z0, True), thresholds)
            del z0  # (its memory is free for the input's spectrum)
            z1, scratch = spectrum_into(x, plan, scratch)
            dist, factors = _stable_forward(*_split_spectrum(z1, True), *ref, beta, w_phase, k)
            return dist, factors, scratch

        ctx.plan = plan
        return forward_in_pieces(ctx, x, target, True, piece)

    @staticmethod
    def backward(ctx, grad):
        def piece(grad, saved, out):
            amp_x = saved[2]
            spectrum = torch.empty(*amp_x.shape[:-1], 2 * amp_x.shape[-1], dtype=amp_x.dtype, device=amp_x.device)
            spectrum = _spectrum_backward(grad, *saved, out=spectrum)
            return coefficients_adjoint(spectrum, ctx.plan, (len(grad), *ctx.shape[1:]), out)

        _no_double_backward()
        return backward_in_pieces(ctx, grad, piece), None, None, None, None, None, None
