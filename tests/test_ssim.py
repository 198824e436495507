"""SSIM and MS-SSIM: the standard values (pytorch-msssim, an independent 2-D convolution), both filter
paths, option checks, dtypes, gradients and the torch.func / torch.compile contracts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import in_pieces, photo_batch

import genloss
from genloss.functional import ms_ssim, ssim
from genloss.losses import ssim as ssim_module
from genloss.losses.ssim import MSSSIMLoss, SSIMLoss


def _checkerboard_pair(photos: torch.Tensor, amplitude: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Photograph at 0.25 + 0.5 x plus a +-amplitude one-pixel checkerboard, and the same with the phase flipped."""
    h, w = photos.shape[-2:]
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    board = amplitude * (1 - 2 * ((i + j) % 2)).to(photos.dtype)
    base = 0.25 + 0.5 * photos
    return base + board, base - board


def _distortions(x: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    noise = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
    blur = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return {"noise": noise, "blur": blur, "shift": x.roll(3, -1)}


def _pm_ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - pytorch_msssim.ms_ssim per image, given our float64 window: pytorch-msssim builds its taps in
    float32 and casts them, which alone moves float64 values by up to 6e-7."""
    pm = pytest.importorskip("pytorch_msssim")
    win = ssim_module.gaussian_window(11, 1.5, x.dtype).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    return 1 - pm.ms_ssim(x, y, data_range=1.0, size_average=False, win=win)


@pytest.fixture(scope="module")
def photos192() -> torch.Tensor:
    return photo_batch(["astronaut", "coffee", "chelsea"], 192).double()


# --- MS-SSIM: the standard definition -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["noise", "blur", "shift"])
def test_ms_ssim_matches_pytorch_msssim_float64(photos192, kind):
    pm = pytest.importorskip("pytorch_msssim")
    x = photos192
    y = _distortions(x)[kind]
    got = MSSSIMLoss(reduction="none")(y, x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _pm_ms_ssim(y, x), rtol=0, atol=1e-7)
    # with its own float32-built window the difference is that window's rounding only
    default = 1 - pm.ms_ssim(y, x, data_range=1.0, size_average=False)
    torch.testing.assert_close(got, default, rtol=0, atol=2e-6)


def test_ms_ssim_checkerboard_in_antiphase_is_zero(photos192):
    """The finest scale's structure term is negative: the standard MS-SSIM is 0 (loss 1), not 0.29."""
    pm = pytest.importorskip("pytorch_msssim")
    a, b = _checkerboard_pair(photos192)
    want = _pm_ms_ssim(a, b)
    peer_default = 1 - pm.ms_ssim(a, b, data_range=1.0, size_average=False)
    torch.testing.assert_close(peer_default, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    a.requires_grad_(True)
    got = MSSSIMLoss(reduction="none")(a, b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    (grad,) = torch.autograd.grad(got.sum(), a)
    assert torch.isfinite(grad).all()  # a zero factor has a zero (not NaN) gradient


def test_ms_ssim_is_a_per_channel_product_then_a_channel_mean(photos192):
    """A checkerboard in one channel only zeroes that channel's product; the others still count."""
    pytest.importorskip("pytorch_msssim")
    a, b = _checkerboard_pair(photos192)
    base = 0.25 + 0.5 * photos192
    x, y = base.clone(), _distortions(base)["noise"]
    x[:, 0], y[:, 0] = a[:, 0], b[:, 0]
    want = _pm_ms_ssim(x, y)
    got = MSSSIMLoss(reduction="none")(x, y)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    # channel 0 contributes 0, channels 1 and 2 their own MS-SSIM: loss = 1 - (0 + m1 + m2) / 3
    grey = MSSSIMLoss(colorspace="LA", reduction="none")
    per_channel = [1 - grey(x[:, c : c + 1], y[:, c : c + 1]) for c in range(3)]
    torch.testing.assert_close(per_channel[0], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(got, 1 - (per_channel[1] + per_channel[2]) / 3, rtol=0, atol=1e-12)


def test_ms_ssim_matches_piq(photos192):
    piq = pytest.importorskip("piq")
    x = photos192
    y = _distortions(x)["blur"]
    want = 1 - piq.multi_scale_ssim(y, x, data_range=1.0, reduction="none")
    torch.testing.assert_close(MSSSIMLoss(reduction="none")(y, x), want, rtol=0, atol=1e-6)


def test_ms_ssim_gradient_at_a_zero_scale_is_finite_and_gradcheck_passes():
    torch.manual_seed(0)
    loss = MSSSIMLoss(scales=2, window=3, reduction="sum")
    x = (0.2 + 0.6 * torch.rand(1, 3, 9, 10, dtype=torch.float64)).requires_grad_(True)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).detach()
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-6)
    # identical inputs: the minimum 0 with a finite gradient
    (g,) = torch.autograd.grad(loss(x, x.detach()), x)
    assert torch.isfinite(g).all()


def test_ms_ssim_minimum_size_is_named():
    loss = MSSSIMLoss()
    assert loss.min_size == 161 and MSSSIMLoss(scales=3, window=7).min_size == 25
    loss(torch.rand(1, 3, 161, 161), torch.rand(1, 3, 161, 161))
    with pytest.raises(ValueError, match="161"):
        loss(torch.rand(1, 3, 160, 200), torch.rand(1, 3, 160, 200))


# --- SSIM: the paper's values, both filter implementations ------------------------------------------
def _ssim_reference(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - mean SSIM with a zero-padded 2-D convolution by the outer-product kernel (as the paper's code)."""
    t = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).to(x.dtype)

    def f(v):
        return F.conv2d(v, k, padding=window // 2, groups=c)

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4))
    return 1 - s.flatten(1).mean(1)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (40, 64), (97, 120), (200, 33)])
def test_ssim_matches_a_direct_2d_convolution(shape):
    torch.manual_seed(1)
    x = torch.rand(2, 3, *shape, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    torch.testing.assert_close(SSIMLoss(reduction="none")(x, y), _ssim_reference(x, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (12, 12), (64, 48), (97, 130), (33, 200)])
def test_banded_and_tiled_filters_agree(shape, same):
    if not same and min(shape) < 11:
        pytest.skip("valid filtering needs a side >= the window")
    torch.manual_seed(2)
    x = torch.rand(3, 2, *shape, dtype=torch.float64)
    g = ssim_module.gaussian_window(11, 1.5, torch.float64)
    torch.testing.assert_close(ssim_module._blur_banded(x, g, same), ssim_module._blur_tiled(x, g, same),
                               rtol=1e-12, atol=1e-12)
    xf = x.float()
    gf = g.float()
    torch.testing.assert_close(ssim_module._blur_banded(xf, gf, same), ssim_module._blur_tiled(xf, gf, same),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("banded_max_side", [0, 10_000])
def test_ssim_gradcheck_float64_on_both_filter_paths(monkeypatch, banded_max_side):
    monkeypatch.setattr(ssim_module, "BANDED_MAX_SIDE", banded_max_side)
    torch.manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(1, 3, 8, 13, dtype=torch.float64)).requires_grad_(True)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).detach()
    assert torch.autograd.gradcheck(lambda a: SSIMLoss()(a, y), (x,), eps=1e-6, atol=1e-6)
    # create_graph=True: the hand-written backward rebuilds itself from differentiable ops
    assert torch.autograd.gradgradcheck(lambda a: SSIMLoss()(a, y), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("pieces", [False, True])
@pytest.mark.parametrize("banded_max_side", [0, 10_000])
@pytest.mark.parametrize(("colorspace", "channels", "window", "sigma"),
                         [("RGB", 3, 11, 1.5), ("LA", 1, 11, 1.5), ("LA", 3, 7, 3.0), ("RGB", 3, 1, 1.0)])
def test_fixed_target_backward_equals_autograd(monkeypatch, banded_max_side, colorspace, channels, window, sigma,
                                               pieces):
    """The input-only backward (a fixed target: the usual case) filters three maps instead of autograd's five;
    it must give autograd's gradient (a target that needs a gradient takes the autograd path) on both filter
    paths, any window, per-image weights (reduction 'none'), sizes smaller and larger than the window, the
    batch whole and in pieces of two images (3 = 2 + 1; sized on the image the Function sees, grey for LA)."""
    monkeypatch.setattr(ssim_module, "BANDED_MAX_SIDE", banded_max_side)
    torch.manual_seed(0)
    loss = SSIMLoss(colorspace=colorspace, reduction="none", window=window, sigma=sigma)
    for shape in ((3, channels, 37, 50), (3, channels, 5, 9)):
        if pieces:
            in_pieces(monkeypatch, 2, torch.empty(3 if colorspace == "RGB" else 1, *shape[2:]))
        x = torch.rand(*shape, dtype=torch.float64)
        y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        weights = torch.arange(1.0, shape[0] + 1, dtype=torch.float64)
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        fixed = loss(a, y)
        (fixed * weights).sum().backward()
        plain = loss(b, y.clone().requires_grad_(True))
        (plain * weights).sum().backward()
        torch.testing.assert_close(fixed, plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_fixed_target_backward_in_pieces_twice_differentiable_and_batched(monkeypatch):
    """A batch in pieces (2 + 1 images): gradcheck, a double backward through the original input (the
    pieces' views made in forward would not lead back to it), and batched gradients (is_grads_batched)."""
    torch.manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(3, 3, 8, 13, dtype=torch.float64)).requires_grad_(True)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).detach()
    in_pieces(monkeypatch, 2, x[0])
    loss = SSIMLoss(reduction="none")
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-6)
    value = loss(x, y)
    (batched,) = torch.autograd.grad(value, x, grad_outputs=torch.eye(3, dtype=torch.float64), is_grads_batched=True,
                                     retain_graph=True)
    rows = [torch.autograd.grad(value[i], x, retain_graph=True)[0] for i in range(3)]
    torch.testing.assert_close(batched, torch.stack(rows), rtol=1e-10, atol=1e-12)


def test_fixed_target_value_where_the_variances_vanish_float32():
    """With window 1 the local variances are exactly 0 (G x² = mu_x²); a fused multiply-subtract in the
    fixed-target forward left ~3e-8 there, relative to C2 = 9e-4, and moved float32 values by up to 3e-5
    on 1x1 images. The in-place forward must give the plain form's value."""
    torch.manual_seed(0)
    loss = SSIMLoss(window=1, sigma=1.0, reduction="none")
    for shape in ((4, 3, 16, 16), (3, 3, 1, 1)):
        x = torch.rand(*shape)
        y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        fixed = loss(x.clone().requires_grad_(True), y)
        plain = loss(x.clone().requires_grad_(True), y.clone().requires_grad_(True))
        torch.testing.assert_close(fixed, plain, rtol=1e-7, atol=0)


def test_value_range_replaces_data_range():
    """[-1, 1] images with value_range=(-1, 1) give the value of the same images in [0, 1]."""
    x = photo_batch(["astronaut"], 64)
    y = x.roll(2, -2)
    torch.testing.assert_close(SSIMLoss(value_range=(-1, 1))(2 * x - 1, 2 * y - 1), SSIMLoss()(x, y))
    with pytest.raises(TypeError):
        SSIMLoss(data_range=2.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        genloss.get_loss("MS-SSIM", data_range=2.0)


@pytest.mark.parametrize("cls", [SSIMLoss, MSSSIMLoss])
@pytest.mark.parametrize("bad", [{"window": 10}, {"window": 0}, {"window": 11.0}, {"window": True},
                                 {"sigma": 0.0}, {"sigma": -1.0}, {"sigma": float("nan")}, {"sigma": float("inf")}])
def test_bad_window_options_are_refused(cls, bad):
    # a value of the wrong kind (11.0, True) is a TypeError, a bad value of the right kind a ValueError
    wrong_kind = any(isinstance(v, bool) or (k == "window" and isinstance(v, float)) for k, v in bad.items())
    with pytest.raises(TypeError if wrong_kind else ValueError, match="window|sigma"):
        cls(**bad)


@pytest.mark.parametrize("scales", [0, 6, 2.5, True])
def test_bad_scales_are_refused(scales):
    with pytest.raises(TypeError if isinstance(scales, (bool, float)) else ValueError, match="scales"):
        MSSSIMLoss(scales=scales)


def test_fewer_scales_use_renormalised_weights_and_five_the_standard_ones():
    assert MSSSIMLoss().weights == ssim_module.MS_SSIM_WEIGHTS
    w = MSSSIMLoss(scales=3).weights
    assert sum(w) == pytest.approx(1.0) and w[0] / w[1] == pytest.approx(0.0448 / 0.2856)


@pytest.mark.parametrize("cls,size", [(SSIMLoss, 24), (MSSSIMLoss, 161)])
def test_dtypes_float64_stays_float64_and_module_casts_do_not_round(cls, size):
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    y = (x + 0.1).clamp(0, 1)
    ref = cls()(x, y)
    assert ref.dtype == torch.float64
    assert cls().half()(x, y).dtype == torch.float64  # no parameters or buffers to round
    torch.testing.assert_close(cls().half()(x, y), ref, rtol=0, atol=0)
    assert cls()(x.float(), y.float()).dtype == torch.float32


# --- functional twins, torch.func, torch.compile ------------------------------------------------
def test_functional_twins_equal_the_classes():
    x = torch.rand(2, 3, 48, 48)
    y = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(ssim(x, y, reduction="none", sigma=2.0), SSIMLoss(reduction="none", sigma=2.0)(x, y))
    torch.testing.assert_close(ms_ssim(x, y, scales=3), MSSSIMLoss(scales=3)(x, y))


def test_functional_names_are_the_functions_whatever_the_import_order():
    code = ("from genloss.functional import ms_ssim\nfrom genloss.functional import ssim\n"
            "assert callable(ssim) and ssim.__name__ == 'ssim', ssim")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cls,size,banded_max_side", [(SSIMLoss, 20, 384), (SSIMLoss, 40, 0), (MSSSIMLoss, 45, 0)])
def test_torch_func_grad_and_vmap_match_eager(monkeypatch, cls, size, banded_max_side):
    from torch.func import grad, vmap

    monkeypatch.setattr(ssim_module, "BANDED_MAX_SIDE", banded_max_side)
    loss = cls(scales=3) if cls is MSSSIMLoss else cls()
    torch.manual_seed(0)
    x = torch.rand(3, 1, 3, size, size, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    looped = torch.stack([loss(a, b) for a, b in zip(x, y, strict=True)])
    torch.testing.assert_close(vmap(loss)(x, y), looped)
    xr = x[0].clone().requires_grad_(True)
    loss(xr, y[0]).backward()
    torch.testing.assert_close(grad(loss)(x[0], y[0]), xr.grad)


@pytest.mark.parametrize("cls,size,banded_max_side", [(SSIMLoss, 32, 384), (SSIMLoss, 72, 0), (MSSSIMLoss, 45, 0)])
def test_torch_compile_fullgraph_traces_and_matches_eager(monkeypatch, cls, size, banded_max_side):
    monkeypatch.setattr(ssim_module, "BANDED_MAX_SIDE", banded_max_side)
    torch._dynamo.reset()
    loss = (cls(scales=3) if cls is MSSSIMLoss else cls()).eval()
    x = torch.rand(2, 3, size, size)
    y = torch.rand(2, 3, size, size)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, y), loss(x, y))


@pytest.mark.parametrize("warm", [True, False])
def test_functional_twin_compiles_fullgraph_warm_or_cold(warm):
    """torch.compile(fullgraph=True) of a function calling the twin traces the twin's instance lookup (and,
    cold, its construction with the option checks): no thread, no inspect.Signature in the traced path."""
    from genloss.functional import _twin

    torch._dynamo.reset()
    _twin.clear_cache()
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    if warm:
        ssim(x, y, window=7)
    compiled = torch.compile(lambda a, b: ssim(a, b, window=7), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, y), ssim(x, y, window=7))
