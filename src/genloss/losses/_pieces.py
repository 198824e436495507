"""A batch in pieces for the hand-written autograd.Functions on the CPU (Watson's frozen paths, SSIM).

Computed whole, a batch's intermediates are each several megabytes: every op reads and writes
them from main memory, and memory freed at the end of a call is faulted in again on the next.
Computed in pieces of a few hundred thousand values, a piece's intermediates stay in the CPU's
caches from one op to the next, and the memory one piece frees serves the next. On a GPU the cost
is kernel launches, which pieces would multiply, so there the batch stays whole.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._validation import in_functorch_transform

#: values per piece of the batch the Function receives (32 RGB images of 64x64; for grey input
#: converted from RGB, the grey values; float64 pieces take twice the bytes). Measured at
#: 128x3x64x64 on 2 threads, alternated in one process: Watson-DFT 36 -> 28 ms per iteration (16
#: images: 30 ms; 8: 36 ms, where the per-op overhead of the more, smaller ops takes over); SSIM
#: 0.79x the time (16 images: 0.90x). Each op is a parallel region: on an oversubscribed CPU (other
#: processes busy on the same cores, more torch threads than free cores) every one waits for a
#: descheduled thread, and pieces multiply the ops (Watson-DFT 303 -> 355 ms with one of 2 cores
#: busy, against 37 -> 34 ms unloaded); torch.set_num_threads(free cores) is the remedy there.
CHUNK_VALUES = 3 * 64 * 64 * 32


def chunk_images(x: torch.Tensor, splittable: bool) -> int:
    """Images per piece of ``x``'s (non-empty) batch: all of them unless each image's result is its own
    (``splittable``) and ``x`` is on the CPU."""
    n = x.shape[0]
    if not splittable or x.device.type != "cpu":
        return n
    return max(1, min(n, CHUNK_VALUES // max(1, x[0].numel())))


def forward_in_pieces(ctx, x: torch.Tensor, target: torch.Tensor, splittable: bool, piece: Callable,
                      keep: tuple[torch.Tensor, ...] = (), shared: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """Run ``piece(x_part, target_part, scratch) -> (result, saved, scratch)`` over pieces of the batch.

    ``scratch`` is what the previous piece returned (``None`` for the first). Saves, for
    :func:`backward_in_pieces`, every piece's tensors, the batch inputs ``keep`` (whole, for a
    double backward through them: a piece's view made here would not lead back to the input) and
    the tensors ``shared`` by all pieces (not per image, e.g. a filter window); returns the pieces'
    results (N, ...) concatenated.
    """
    step = chunk_images(x, splittable)
    results, saved, scratch = [], [], None
    for start in range(0, x.shape[0], step):
        part = slice(start, start + step)
        result, factors, scratch = piece(x[part], target[part], scratch)
        results.append(result)
        saved.extend(factors)
    ctx.save_for_backward(*shared, *keep, *saved)
    ctx.step, ctx.per_piece, ctx.shape = step, len(saved) // len(results), x.shape
    ctx.shared, ctx.kept = len(shared), len(keep)
    return results[0] if len(results) == 1 else torch.cat(results)


def backward_in_pieces(ctx, grad: torch.Tensor, piece: Callable) -> torch.Tensor:
    """The input's gradient from ``piece(grad_part, saved_part, out) -> gradient of x_part`` over the pieces
    of :func:`forward_in_pieces`, written into one tensor: ``out`` is that tensor's part, or ``None``
    for a single piece and where the parts are concatenated instead (batched gradients,
    ``is_grads_batched``: no ``out=`` into an unbatched tensor; ``create_graph=True``: ``out=`` is
    not differentiable). ``saved_part`` is the shared tensors, the piece's parts of the kept
    inputs, then the piece's own tensors.
    """
    saved, step, per = ctx.saved_tensors, ctx.step, ctx.per_piece
    shared, kept = saved[: ctx.shared], saved[ctx.shared: ctx.shared + ctx.kept]
    first = ctx.shared + ctx.kept
    parts = []
    for i, start in enumerate(range(0, ctx.shape[0], step)):
        part = slice(start, start + step)
        own = saved[first + i * per: first + (i + 1) * per]
        parts.append((part, (*shared, *(t[part] for t in kept), *own)))
    if len(parts) == 1 or in_functorch_transform(grad) or torch.is_grad_enabled():
        grads = [piece(grad[part], factors, None) for part, factors in parts]
        return grads[0] if len(grads) == 1 else torch.cat(grads)
    grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)
    for part, factors in parts:
        piece(grad[part], factors, grad_x[part])
    return grad_x
