"""Watson-DCT and Watson-DFT: eval determinism, the training shift, torch.func, torch.compile, options, twins."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from conftest import in_pieces, photo_batch

import genloss
from genloss import functional as GF
from genloss.losses.watson import WatsonDCT, WatsonDFT, _block_rows, _shift_index
from genloss.transforms.blocks import block_dct_matrix, block_rdft_matrix, pad_to_multiple, to_blocks
from genloss.transforms.color import as_grey, rgb_to_ycbcr

CLASSES = {"Watson-DCT": WatsonDCT, "Watson-DFT": WatsonDFT}
NAMES = list(CLASSES)


@pytest.fixture(scope="module")
def pair():
    x = photo_batch(["astronaut", "coffee"], 24)
    y = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # a real blur
    return y, x


def _la(t: torch.Tensor) -> torch.Tensor:
    return (0.299 * t[:, :1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:]).contiguous()


def _pair_for(cs, pair):
    y, x = pair
    return (y, x) if cs == "RGB" else (_la(y), _la(x))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- eval determinism and the training-time shift -----------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic_and_training_mode_shifts(name, pair, reference_weights):
    y, x = pair
    loss = genloss.get_loss(name)  # tuned, deterministic=False: the paper's training setting
    assert loss.training
    torch.manual_seed(0)
    train = {float(loss(y, x)) for _ in range(8)}
    assert len(train) > 1  # the random shift changes the block grid
    loss.eval()
    assert loss(y, x) == loss(y, x)
    torch.testing.assert_close(loss(y, x), genloss.get_loss(name, deterministic=True)(y, x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_training_shift_is_seedable(name, pair):
    y, x = pair
    loss = CLASSES[name](pretrained=False)
    torch.manual_seed(3)
    a = [loss(y, x) for _ in range(4)]
    torch.manual_seed(3)
    b = [loss(y, x) for _ in range(4)]
    assert a == b


@pytest.mark.parametrize("size", [(8, 8), (24, 24), (13, 21), (9, 30)])
@pytest.mark.parametrize("max_shift", [2, 3, 8])
def test_shift_gather_equals_pad_crop_pad_and_block_split(size, max_shift):
    h, w = size
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    pad = max_shift // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")

    assert torch.equal(_block_rows(x, None, 8), to_blocks(pad_to_multiple(x, 8), 8))
    for oy in range(max_shift):
        for ox in range(max_shift):
            expected = to_blocks(pad_to_multiple(padded[..., oy : oy + h, ox : ox + w], 8), 8)
            got = _block_rows(x, _shift_index(x.shape, torch.tensor([oy, ox]), pad, 8), 8)
            assert torch.equal(got, expected), (oy, ox)


@pytest.mark.parametrize("cs,channels", [("RGB", 3), ("LA", 1), ("LA", 3)])
@pytest.mark.parametrize("name", NAMES)
def test_transform_equals_colour_conversion_then_block_transform(name, cs, channels):
    """Colour product, block rows and one GEMM give the shared colour conversion's block transform."""
    x = torch.rand(2, channels, 16, 24, dtype=torch.float64)
    loss = CLASSES[name](pretrained=False, colorspace=cs).double()
    conv = rgb_to_ycbcr(x) if cs == "RGB" else as_grey(x)
    blocks = to_blocks(conv, 8)
    if name == "Watson-DCT":
        expected = blocks @ block_dct_matrix(8, torch.float64, x.device)
    else:
        expected = blocks @ block_rdft_matrix(8, torch.float64, x.device) / 64
    torch.testing.assert_close(loss._transform(x, None), expected, rtol=1e-12, atol=1e-12)
    if name == "Watson-DFT":  # faithful: the colour-converted pixels, then torch.fft as the paper
        faithful = CLASSES[name](pretrained=False, colorspace=cs, faithful=True).double()
        re, im = faithful._spectrum(faithful._transform(x, None))
        spec = torch.view_as_real(torch.fft.rfft2(blocks.reshape(*blocks.shape[:3], 8, 8))) / 64
        torch.testing.assert_close(re, spec[..., 0].flatten(3), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(im, spec[..., 1].flatten(3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_training_shift_gradient_matches_the_explicit_shift(name, pair, monkeypatch):
    """The gathered shift is differentiable and equals shifting both images by hand in eval mode."""
    y, x = pair
    loss = CLASSES[name](pretrained=False, max_shift=8).requires_grad_(False)
    offset = torch.tensor([6, 1])  # (+2, -3) px
    monkeypatch.setattr(loss, "_draw_offset", lambda device: offset.to(device))
    a = y.clone().requires_grad_(True)
    loss(a, x).backward()

    def shifted(t):
        return F.pad(t, (4, 4, 4, 4), mode="replicate")[..., 6 : 6 + t.shape[-2], 1 : 1 + t.shape[-1]]

    monkeypatch.undo()
    b = y.clone().requires_grad_(True)
    expected = loss.eval()(shifted(b), shifted(x))
    expected.backward()
    # float32: the replicated border pixels sum large opposite contributions in another order
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7 * float(b.grad.abs().max()))


# --- torch.func ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cs", ["RGB", "LA"])
@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_torch_func_grad_and_vmap_match_backward_and_a_loop(name, faithful, cs, pair, reference_weights):
    y, x = _pair_for(cs, pair)
    loss = genloss.get_loss(name, colorspace=cs, faithful=faithful).eval()  # frozen: the fast backward
    g = torch.func.grad(lambda a: loss(a, x))(y)
    a = y.clone().requires_grad_(True)
    loss(a, x).backward()
    # the hand-written backward and autograd round differently: float32 rounding level
    assert _rel(g, a.grad) < 1e-5
    per_image = torch.func.vmap(lambda a, b: loss(a[None], b[None]))(y, x)
    loop = torch.stack([loss(y[i : i + 1], x[i : i + 1]) for i in range(len(y))])
    torch.testing.assert_close(per_image, loop, rtol=1e-6, atol=0)
    grads = torch.func.vmap(torch.func.grad(lambda a, b: loss(a[None], b[None])))(y, x)
    for i in range(len(y)):
        ai = y[i : i + 1].clone().requires_grad_(True)
        loss(ai, x[i : i + 1]).backward()
        assert _rel(grads[i], ai.grad[0]) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_torch_func_grad_of_untrained_parameters(name, pair):
    """torch.func.grad with respect to the parameters (a loss being tuned) equals backward."""
    y, x = pair
    loss = CLASSES[name](pretrained=False, deterministic=True)
    params = {k: v.detach() for k, v in loss.named_parameters()}
    g = torch.func.grad(lambda p: torch.func.functional_call(loss, p, (y, x)))(params)
    loss(y, x).backward()
    for k, p in loss.named_parameters():
        torch.testing.assert_close(g[k], p.grad, rtol=1e-5, atol=1e-6, msg=k)


# --- torch.compile -------------------------------------------------------------------------------
def _compiled_matches(loss, y, x, backend: str, grad_tol: float = 1e-5) -> None:
    compiled = torch.compile(loss, fullgraph=True, backend=backend)  # fullgraph: a graph break raises
    a = y.clone().requires_grad_(True)
    value = compiled(a, x)
    value.backward()
    b = y.clone().requires_grad_(True)
    eager = loss(b, x)
    eager.backward()
    torch.testing.assert_close(value, eager, rtol=1e-5, atol=0)
    assert _rel(a.grad, b.grad) < grad_tol


@pytest.mark.parametrize("pretrained", [False, True])
@pytest.mark.parametrize("cs", ["RGB", "LA"])
@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_compile_traces_eval_mode_in_one_graph(name, faithful, cs, pretrained, pair, reference_weights):
    """Every configuration traces without a graph break (aot_eager: the whole dynamo + AOT trace)."""
    torch._dynamo.reset()
    y, x = _pair_for(cs, pair)
    loss = genloss.get_loss(name, colorspace=cs, faithful=faithful, pretrained=pretrained).eval()
    _compiled_matches(loss, y, x, "aot_eager")


@pytest.mark.parametrize("name", NAMES)
def test_compile_with_inductor_gives_the_eager_value(name, pair, reference_weights):
    torch._dynamo.reset()
    y, x = pair
    loss = genloss.get_loss(name).eval()
    _compiled_matches(loss, y, x, "inductor", grad_tol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_compile_traces_training_mode_with_the_random_shift(name, pair):
    torch._dynamo.reset()
    y, x = pair
    loss = CLASSES[name](pretrained=False).requires_grad_(False)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    values = {float(compiled(y, x)) for _ in range(8)}
    assert len(values) > 1
    loss.eval()
    shifts = set()
    for oy in range(8):
        for ox in range(8):
            r = F.pad(y, (4,) * 4, mode="replicate")[..., oy : oy + 24, ox : ox + 24]
            t = F.pad(x, (4,) * 4, mode="replicate")[..., oy : oy + 24, ox : ox + 24]
            shifts.add(round(float(loss(r, t)), 3))
    assert {round(v, 3) for v in values} <= shifts  # each value is one of the 64 shifted losses


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_read_no_tensor_data_on_the_host(name, pair, monkeypatch):
    """CPU proxy of 'no GPU synchronisation': no .item(), .tolist(), numpy or bool(tensor) in the loss.

    (The value check of ImageLoss reads its aminmax via float(); on CUDA it is asynchronous.)
    """
    y, x = pair
    loss = CLASSES[name](pretrained=False).requires_grad_(False)  # training mode: the shift too

    def refuse(*args, **kwargs):
        raise AssertionError("host read of tensor data")

    a = y.clone().requires_grad_(True)
    for attr in ("item", "tolist", "numpy", "__bool__"):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    loss(a, x).backward()
    monkeypatch.undo()
    assert torch.isfinite(a.grad).all()


# --- values, dtypes, options ---------------------------------------------------------------------
def test_identical_images_give_the_epsilon_floor(pair):
    """d = 0: every coefficient contributes (1e-10)**beta + 1e-10 to the pooled sum (the paper's epsilons)."""
    _, x = pair
    loss = WatsonDCT(pretrained=False, reduction="none").eval()  # beta = 4, softmax(0) = 1/3 per channel
    k, f = (24 // 8) ** 2, 64
    expected = (k * f * (1e-40 + 1e-10)) ** 0.25
    torch.testing.assert_close(loss(x, x), torch.full((2,), expected), rtol=1e-4, atol=0)
    a = x.clone().requires_grad_(True)
    loss(a, x).sum().backward()
    assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_identical_images_are_the_minimum_with_a_zero_finite_gradient(name, faithful, pair):
    y, x = pair
    loss = CLASSES[name](pretrained=False, faithful=faithful, reduction="none").eval()
    a = x.clone().requires_grad_(True)
    same = loss(a, x)
    same.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().max() < 1e-6  # a minimum: zero gradient
    assert (same < loss(y, x)).all() and (same < loss((x + 0.01).clamp(0, 1), x)).all()


@pytest.mark.parametrize("name", NAMES)
def test_double_module_and_float64_input_compute_in_float64(name, pair):
    y, x = pair
    loss = CLASSES[name](pretrained=False).eval()
    v64 = loss(y.double(), x.double())
    assert v64.dtype == torch.float64
    torch.testing.assert_close(loss.double()(y.double(), x.double()), v64, rtol=1e-12, atol=0)
    assert loss._buffer("block_basis", torch.float64).dtype == torch.float64
    torch.testing.assert_close(loss.float()(y, x), v64.float(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_half_module_is_refused(name, pair):
    y, x = pair
    loss = CLASSES[name](pretrained=False).eval().half()
    with pytest.raises(TypeError, match="float32"):
        loss(y, x)


@pytest.mark.parametrize("colorspace", ["LA", "RGB"])
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_of_the_fast_backward(name, colorspace):
    torch.manual_seed(0)
    loss = CLASSES[name](pretrained=False, colorspace=colorspace).eval().double().requires_grad_(False)
    with torch.no_grad():  # different parameters per channel, so a mixed-up channel would show
        loss.beta.copy_(torch.tensor([1.5, 2.5, 4.0][: loss.beta.numel()]))
    x = torch.rand(2, 1 if colorspace == "LA" else 3, 8, 16, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss(a, x), (y,))


@pytest.mark.parametrize("name", NAMES)
def test_invalid_options_are_refused(name):
    cls = CLASSES[name]
    with pytest.raises(ValueError, match="faithful"):
        cls(pretrained=False, faithful=True, luminance_floor=0.1)
    with pytest.raises(ValueError, match="luminance_floor"):
        cls(pretrained=False, luminance_floor=1.5)
    with pytest.raises(ValueError, match="max_shift"):
        cls(pretrained=False, max_shift=-1)
    for bad in (2.5, True):  # not an integer: the wrong kind
        with pytest.raises(TypeError, match="max_shift must be an integer"):
            cls(pretrained=False, max_shift=bad)
    assert cls(pretrained=False, faithful=True).luminance_floor is None
    assert cls(pretrained=False).luminance_floor == 0.1


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_and_buffers_follow_the_module(name, pair):
    y, x = pair
    torch.manual_seed(0)
    a = CLASSES[name](pretrained=False, deterministic=True)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = CLASSES[name](pretrained=False, deterministic=True)
    b.load_state_dict(a.state_dict())
    assert not any(k.startswith("_basis") for k in a.state_dict())  # derived, not saved
    torch.testing.assert_close(b(y, x), a(y, x), rtol=0, atol=0)


# --- functional twins ----------------------------------------------------------------------------
@pytest.mark.parametrize("fn,name", [(GF.watson_dct, "Watson-DCT"), (GF.watson_dft, "Watson-DFT")])
def test_functional_twin_equals_the_module_in_eval_mode(fn, name, pair):
    y, x = pair
    cls = CLASSES[name]
    # a functional call has fixed (frozen) parameters: compare with the frozen module, which takes the same path
    frozen = cls(pretrained=False, reduction="none").eval().requires_grad_(False)
    torch.testing.assert_close(fn(y, x, pretrained=False, reduction="none"), frozen(y, x), rtol=0, atol=0)
    la = fn(_la(y), _la(x), colorspace="LA", pretrained=False, faithful=True)
    torch.testing.assert_close(la, cls(colorspace="LA", pretrained=False, faithful=True).eval()(_la(y), _la(x)))
    # the twin's options are the class' options minus the training-only ones
    cls_params = dict(inspect.signature(cls).parameters)
    for training_only in ("deterministic", "max_shift"):
        cls_params.pop(training_only)
    fn_params = dict(list(inspect.signature(fn).parameters.items())[2:])
    assert list(fn_params) == list(cls_params)
    assert {k: p.default for k, p in fn_params.items()} == {k: p.default for k, p in cls_params.items()}
    with pytest.raises(TypeError):
        fn(y, x, pretrained=False, deterministic=True)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_positive_pow_is_pow(dtype, rtol):
    """Watson's powers are exp(b log x) (twice as fast on CPU as pow with a tensor exponent): same values."""
    from genloss.losses._watson_kernels import positive_pow

    x = torch.logspace(-10, 3, 4001, dtype=torch.float64).view(-1, 1)
    b = torch.tensor([0.2, 1.0, 2.5, 4.0], dtype=torch.float64)
    want = x.pow(b)
    got = positive_pow(x.to(dtype), b.to(dtype)).double()
    torch.testing.assert_close(got, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_a_module_built_on_the_meta_device_does_not_change_later_ones(name):
    """The block matrices used to be cached per process: a first module built under torch.device('meta')
    left a data-less matrix for every later module (found with the probe of the CorrWise caches). In a
    fresh process, so that nothing is cached before."""
    import subprocess
    import sys

    cls = CLASSES[name].__name__
    code = f"""
import torch, genloss
x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
try:
    with torch.device("meta"):
        genloss.{cls}(pretrained=False)
except (NotImplementedError, RuntimeError):
    pass  # building on meta is not supported; it must only leave no trace
print(float(genloss.{cls}(pretrained=False).eval()(x, x.flip(-1)).detach()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = float(CLASSES[name](pretrained=False).eval()(x, x.flip(-1)).detach())
    assert float(out.stdout.split()[-1]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("pieces", [False, True])
@pytest.mark.parametrize(("cs", "channels"), [("RGB", 3), ("LA", 1), ("LA", 3)])
@pytest.mark.parametrize("size", [(21, 30), (16, 24)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_fast_path_matches_autograd(name, train, size, cs, channels, pieces, monkeypatch):
    """Frozen fast path (one Function that reuses its buffers) == autograd: with and without the random
    shift (same seed), sizes with and without block padding, RGB and grey of 1 or 3 channels, the
    batch whole and in uneven pieces (2 + 1 images)."""
    loss = CLASSES[name](pretrained=False, colorspace=cs).double().train(train).requires_grad_(False)
    with torch.no_grad():  # different parameters per channel, so a mixed-up channel would show
        loss.beta.copy_(torch.tensor([1.5, 2.5, 4.0][: loss.beta.numel()]))
    x = torch.rand(3, channels, *size, dtype=torch.float64)
    if pieces:
        in_pieces(monkeypatch, 2, x[0])
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.manual_seed(3)
    fast = loss(a, y)
    fast.backward()
    torch.manual_seed(3)
    slow = loss(b, y.clone().requires_grad_(True))  # a target that needs grad forces autograd
    slow.backward()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_pieces_only_on_the_cpu_and_for_splittable_batches():
    """Pieces of the batch serve the CPU's caches; on a GPU they would only multiply kernel launches."""
    from genloss.losses._pieces import CHUNK_VALUES, chunk_images

    n = 4 * CHUNK_VALUES // (3 * 64 * 64)
    assert chunk_images(torch.empty(n, 3, 64, 64), splittable=True) == n // 4
    assert chunk_images(torch.empty(n, 3, 64, 64), splittable=False) == n
    assert chunk_images(torch.empty(n, 3, 64, 64, device="meta"), splittable=True) == n
    assert chunk_images(torch.empty(2, 3, 1024, 1024), splittable=True) == 1  # at least one image


def test_faithful_frozen_dct_keeps_the_batch_whole(monkeypatch):
    """The faithful luminance masking normalises by the mean DC of the whole batch: its frozen Function
    must not split the batch into pieces (each piece would have its own mean)."""
    loss = WatsonDCT(pretrained=False, faithful=True, reduction="none").double().eval().requires_grad_(False)
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    x[2:] *= 0.3  # darker images: a piece's mean DC would differ from the batch's
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    in_pieces(monkeypatch, 2, x[0])
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fast = loss(a, y)
    slow = loss(b, y.clone().requires_grad_(True))
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    fast.sum().backward()
    slow.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(("cs", "channels"), [("RGB", 3), ("LA", 1)])
@pytest.mark.parametrize("name", NAMES)
def test_blocks_equal_to_the_target_get_no_gradient(name, cs, channels, fast):
    """Where the input already equals the target (an unchanged region of an edited image) the gradient is
    exactly zero, in float32 too: Watson-DFT's fast path once computed the phase's sin d with a fused
    multiply-add, whose rounding error the gradient factor magnified to ~1e-2 there."""
    loss = CLASSES[name](pretrained=False, colorspace=cs).eval().requires_grad_(False)
    loss.fast_backward = fast
    y = photo_batch(["coffee", "astronaut"], 32)[:, :channels]
    x = y.clone()
    x[..., :8, 8:16] = (x[..., :8, 8:16] + 0.1).clamp(0, 1)  # one 8x8 block differs
    a = x.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(a, y), a)
    assert grad[..., :8, 8:16].abs().amax() > 0
    grad[..., :8, 8:16] = 0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(("cs", "channels"), [("RGB", 3), ("LA", 1), ("LA", 3)])
@pytest.mark.parametrize("name", NAMES)
def test_batched_gradients_of_a_batch_in_pieces(name, cs, channels, train, monkeypatch):
    """Batched gradients (is_grads_batched) through a frozen Function that splits the batch: the parts'
    gradients cannot be written into one unbatched tensor, so they are concatenated instead; and the
    pixels' gradient without a colour product (LA of one channel; the block permutation in eval mode,
    the shift's scatter in training mode) is a fresh tensor, not an in-place write into one."""
    loss = CLASSES[name](pretrained=False, colorspace=cs, reduction="none").train(train).requires_grad_(False)
    x = torch.rand(3, channels, 16, 16)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    in_pieces(monkeypatch, 2, x[0])
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(0)  # (one random shift for the whole graph)
    value = loss(xg, y)
    (batched,) = torch.autograd.grad(value, xg, grad_outputs=torch.eye(3), is_grads_batched=True, retain_graph=True)
    rows = [torch.autograd.grad(value[i], xg, retain_graph=True)[0] for i in range(3)]
    torch.testing.assert_close(batched, torch.stack(rows), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_owns_its_memory(name, train):
    """The fast path reuses buffers: the input's gradient must not be a view that keeps a larger buffer
    alive (a one-channel image of 9x9 px held the 512 values of its padded blocks)."""
    loss = CLASSES[name](pretrained=False, colorspace="LA").train(train).requires_grad_(False)
    x = torch.rand(2, 1, 9, 9)
    a = x.clone().requires_grad_(True)
    loss(a, (x + 0.1).clamp(0, 1)).backward()
    assert a.grad.untyped_storage().nbytes() == a.grad.numel() * a.grad.element_size()


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_la_on_three_channel_input_equals_la_on_its_luma(name, train, fast):
    """LA converts 3-channel input to grey first; the training shift then applies to the grey image
    (its gather index has one channel, not three), on the fast path and the autograd path alike."""
    loss = CLASSES[name](pretrained=False, colorspace="LA").double().train(train).requires_grad_(not fast)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 17, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    a = x.clone().requires_grad_(True)
    torch.manual_seed(4)
    got = loss(a, y)
    got.backward()
    g = as_grey(x).requires_grad_(True)
    torch.manual_seed(4)
    expected = loss(g, as_grey(y))
    expected.backward()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # chain rule through the luma weights
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(a.grad, g.grad * luma, rtol=1e-9, atol=1e-12)


def _vanishing_coefficient_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(input, target) pairs with block coefficients that are zero in exact arithmetic."""
    torch.manual_seed(0)
    t = torch.rand(1, 3, 9, 17)  # replicated padding to 16x24: constant columns/rows in the last blocks
    grey = torch.rand(1, 1, 16, 16)  # a grey picture as RGB: Cb = Cr = 0
    return {"padded": ((t + 0.05 * torch.randn_like(t)).clamp(0, 1), t),
            "grey as RGB": ((grey + 0.05 * torch.randn_like(grey)).clamp(0, 1).expand(1, 3, 16, 16).contiguous(),
                            grey.expand(1, 3, 16, 16).contiguous())}


@pytest.mark.parametrize("pretrained", [False, True])
@pytest.mark.parametrize("case", ["padded", "grey as RGB"])
@pytest.mark.parametrize("name", NAMES)
def test_float32_agrees_with_float64_where_coefficients_vanish(name, case, pretrained, request):
    """Float32 rounding noise (~1e-8) of coefficients that are exactly zero must not decide Watson-DFT's
    phase angles (the paper's EPS = 1e-10 does): it made the float32 distance 10x off the float64 one."""
    if pretrained:
        request.getfixturevalue("reference_weights")
    a, b = _vanishing_coefficient_pairs()[case]
    results = {}
    for dtype in (torch.float32, torch.float64):
        loss = genloss.get_loss(name, pretrained=pretrained).eval().to(dtype)
        x = a.to(dtype).detach().requires_grad_(True)
        value = loss(x, b.to(dtype))
        value.backward()
        results[dtype] = (value.double(), x.grad.double())
    (v32, g32), (v64, g64) = results[torch.float32], results[torch.float64]
    torch.testing.assert_close(v32, v64, rtol=1e-5, atol=0)
    assert (g32 - g64).norm() / g64.norm() < 0.05


@pytest.mark.parametrize("name", NAMES)
def test_dtype_casts_of_the_module_keep_both_precisions_of_the_transforms(name):
    """.half()/.float()/.to(dtype) convert every floating buffer; the float64 transform matrices (used by
    float64 input) must not come back rounded to 16 or 32 bits."""
    fresh = CLASSES[name](pretrained=False).eval()
    halved = CLASSES[name](pretrained=False).eval().half()  # (its parameters are rounded: it refuses to run)
    cast = CLASSES[name](pretrained=False).eval().double().to(torch.float32)  # parameters survive exactly
    for module in (halved, halved.float(), cast):
        for buffer in ("block_basis", "mix", "offset"):
            for dtype in (torch.float32, torch.float64):
                got, expected = module._buffer(buffer, dtype), fresh._buffer(buffer, dtype)
                assert got.dtype == dtype and torch.equal(got, expected), (buffer, dtype)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 24)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert torch.equal(cast(x, y), fresh(x, y))
    assert torch.equal(cast.double()(x.double(), y.double()), fresh.double()(x.double(), y.double()))


@pytest.mark.parametrize("size", [(16, 24), (20, 13)])
@pytest.mark.parametrize("shift", [None, (7, 3)])
@pytest.mark.parametrize("cs,channels", [("RGB", 3), ("LA", 1), ("LA", 3)])
def test_exact_transform_is_the_block_dft_with_exact_zeros(cs, channels, shift, size):
    """Watson-DFT's transform (chroma in difference form, an FFT per block) is the block DFT, gives exact
    zeros where the exact coefficients vanish (grey chroma, blocks constant along rows), and its
    autograd gradient is right (gradcheck)."""
    loss = WatsonDFT(pretrained=False, colorspace=cs)
    torch.manual_seed(0)
    x = torch.rand(2, channels, *size, dtype=torch.float64)
    x[..., -9:] = x[..., -9:-8]  # the last 9 columns equal: blocks constant along their rows
    if channels == 3:
        x[1] = x[1, :1]  # a grey picture
    index = None if shift is None else _shift_index((2, loss.n_channels, *size), torch.tensor(shift), 4, 8)
    conv = rgb_to_ycbcr(x) if cs == "RGB" else as_grey(x)
    expected = _block_rows(conv, index, 8) @ block_rdft_matrix(8, torch.float64, x.device) / 64
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        z = loss.to(dtype)._transform(x.to(dtype), index).double()
        torch.testing.assert_close(z[..., 1:], expected[..., 1:], rtol=tol, atol=tol)  # (DC: + YCbCr offset)
        # exactly zero where exact arithmetic gives zero (not 1e-8 or 1e-16 of rounding noise)
        vanishing = expected.abs() < 1e-13
        vanishing[..., 0] = False
        assert vanishing.any() and torch.equal(z[vanishing], torch.zeros_like(z[vanishing])), dtype
    small = x[:1, :, :12, :12].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss.double()._transform(a, None), (small,))


def test_exact_transform_double_backward_matches_float64():
    """create_graph=True through Watson-DFT's float32 transform: the second backward runs the transform's
    backward forward again, so it needs the FFT's exact zeros too (a padded size has vanishing coefficients)."""
    torch.manual_seed(0)
    t = torch.rand(1, 3, 9, 17)
    x = (t + 0.05 * torch.randn_like(t)).clamp(0, 1)

    def hessian_vector(dtype):
        loss = WatsonDFT(pretrained=False).eval().to(dtype)
        loss.fast_backward = False
        xi = x.to(dtype).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xi, t.to(dtype)), xi, create_graph=True)
        return torch.autograd.grad((g * g).sum(), xi)[0].double()

    h32, h64 = hessian_vector(torch.float32), hessian_vector(torch.float64)
    assert (h32 - h64).norm() / h64.norm() < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_blocks_get_the_gradient_of_their_dc_only(dtype):
    """A block that is flat in input and target (at different levels) has only a DC difference: every
    pixel of it gets the same gradient. Rounding noise on its vanishing AC coefficients (a GEMM's, even in
    float64) met the phase angle's ~1/EPS-singular gradient and gave ~1e3 instead of a uniform ~0.3."""
    torch.manual_seed(0)
    t = torch.rand(1, 3, 16, 16)
    t[..., :8, :8] = 0.30
    x = (t + 0.03 * torch.randn_like(t)).clamp(0, 1)
    x[..., :8, :8] = 0.32
    loss = WatsonDFT(pretrained=False).eval().to(dtype)
    xi = x.to(dtype).requires_grad_(True)
    loss(xi, t.to(dtype)).backward()
    patch = xi.grad[..., :8, :8]
    assert patch.abs().max() < 1.0
    assert (patch.amax(dim=(-2, -1)) - patch.amin(dim=(-2, -1))).abs().max() < 1e-2 * patch.abs().max()


@pytest.mark.parametrize("fast_backward", [True, False])
def test_dft_forward_mode_ad_and_vectorised_hessian(fast_backward):
    """Watson-DFT's block FFT Functions have a jvp (forward-mode AD) and batch under the vectorised
    Jacobians of torch.autograd.functional, as the plain autograd ops before them did."""
    import torch.autograd.forward_ad as fwAD

    loss = WatsonDFT(pretrained=False).eval().double()
    loss.fast_backward = fast_backward
    torch.manual_seed(0)
    t = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    x = (t + 0.05 * torch.randn_like(t)).clamp(0, 1)
    v = torch.randn_like(x)
    with fwAD.dual_level():
        value, tangent = fwAD.unpack_dual(loss(fwAD.make_dual(x, v), t))
    a = x.clone().requires_grad_(True)
    loss(a, t).backward()
    torch.testing.assert_close(tangent, (a.grad * v).sum(), rtol=1e-10, atol=1e-12)
    hessian = torch.autograd.functional.hessian(lambda z: loss(z, t), x, vectorize=True)
    torch.testing.assert_close(hessian, torch.autograd.functional.hessian(lambda z: loss(z, t), x),
                               rtol=1e-10, atol=1e-10)
