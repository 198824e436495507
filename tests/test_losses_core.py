"""Behaviour of the pixel, SSIM and Watson losses: API, validation, precision, gradients, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE_WEIGHTS, photo_batch

import genloss
from genloss.losses.watson import WatsonDCT, WatsonDFT
from genloss.registry import make_loss

CORE = ["L1", "L2", "SSIM", "MS-SSIM", "Watson-DCT", "Watson-DFT"]
BLOCK_LOSSES = ["Watson-DCT", "Watson-DFT"]


def build(name, **kw):
    """An untrained, deterministic loss; options that a loss does not have are not passed to it."""
    common = {"pretrained": kw.pop("pretrained", False), "deterministic": kw.pop("deterministic", True)}
    for key in ("colorspace", "reduction"):
        if key in kw:
            common[key] = kw.pop(key)
    return make_loss(name, common, **kw)


@pytest.fixture(scope="module")
def photos():
    x = photo_batch(["astronaut", "coffee"], 64)
    y = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # a real blur
    return x, y


def _size_for(name):
    return 176 if name == "MS-SSIM" else 64


# --- API and registry ----------------------------------------------------------------------------
def test_names_are_case_insensitive_and_paper_spellings_work():
    a = genloss.get_loss("watson-dft", pretrained=False)
    b = genloss.LossProvider().get_loss_function("Watson-fft", pretrained=False)
    assert type(a) is type(b) is WatsonDFT
    assert isinstance(genloss.get_loss("WATSON-DCT", pretrained=False), WatsonDCT)
    assert isinstance(genloss.get_loss("mse"), torch.nn.Module)


def test_unknown_name_and_colorspace_are_clear_errors():
    with pytest.raises(ValueError, match="unknown loss 'Watson-XYZ'"):
        genloss.get_loss("Watson-XYZ")
    with pytest.raises(ValueError, match="colorspace"):
        genloss.get_loss("L1", colorspace="HSV")
    with pytest.raises(ValueError, match="reduction"):
        genloss.get_loss("L1", reduction="max")


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_reductions(name, reduction, photos):
    s = _size_for(name)
    x = photo_batch(["astronaut", "coffee"], s)
    y = x.flip(-1)
    per = build(name, reduction="none")(x, y)
    out = build(name, reduction=reduction)(x, y)
    assert per.shape == (2,)
    want = {"sum": per.sum(), "mean": per.mean(), "none": per}[reduction]
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("name", CORE)
def test_identical_inputs_give_minimum_and_finite_gradients(name):
    s = _size_for(name)
    x = photo_batch(["astronaut"], s).requires_grad_(True)
    loss = build(name)(x, x.detach())
    loss.backward()
    assert torch.isfinite(x.grad).all()
    if name.startswith("Watson"):
        # the paper's epsilons leave a small floor (acos(1 - 1e-7) per phase term); it is the minimum
        noisy = (x.detach() + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        assert 0 <= loss.item() < 0.5 * build(name)(noisy, x.detach()).item()
    else:
        assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", CORE)
def test_distortion_increases_loss(name):
    s = _size_for(name)
    x = photo_batch(["chelsea"], s)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    small = build(name)((x + 0.02 * noise).clamp(0, 1), x)
    large = build(name)((x + 0.2 * noise).clamp(0, 1), x)
    assert 0 < small < large


# --- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CORE)
def test_bad_input_errors(name):
    loss = build(name)
    s = _size_for(name)
    x = torch.rand(1, 3, s, s)
    with pytest.raises(ValueError, match="4-D"):
        loss(x[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        loss(x, x[..., : s - 8])
    with pytest.raises(ValueError, match="channels"):
        loss(torch.rand(1, 2, s, s), torch.rand(1, 2, s, s))
    with pytest.raises(TypeError, match="floating point"):
        loss((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(bad, x)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(x, bad)
    with pytest.raises(TypeError, match="torch.Tensor"):
        loss(x.numpy(), x)


@pytest.mark.parametrize("name", BLOCK_LOSSES + ["MS-SSIM"])
def test_images_smaller_than_a_block_are_rejected(name):
    with pytest.raises(ValueError, match="smaller than the minimum"):
        build(name)(torch.rand(1, 3, 7, 32), torch.rand(1, 3, 7, 32))


def test_rgb_loss_rejects_grey_and_la_accepts_both():
    x = photo_batch(["astronaut"], 32)
    with pytest.raises(ValueError, match="expected 3"):
        build("Watson-DCT", colorspace="RGB")(x[:, :1], x[:, :1])
    la = build("Watson-DCT", colorspace="LA")
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    y = x.flip(-1)
    grey_y = (y * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(la(x, y), la(grey, grey_y))


# --- sizes, precision, devices ---------------------------------------------------------------------
@pytest.mark.parametrize("name", BLOCK_LOSSES)
def test_sizes_not_multiple_of_8_are_replicate_padded(name):
    x = photo_batch(["coffee"], 64)[..., :45, :30]
    y = x.roll(2, -1)
    loss = build(name)
    padded = loss(F.pad(x, (0, 2, 0, 3), mode="replicate"), F.pad(y, (0, 2, 0, 3), mode="replicate"))
    torch.testing.assert_close(loss(x, y), padded)


@pytest.mark.parametrize("name", CORE)
def test_bfloat16_autocast_and_half_inputs(name):
    s = _size_for(name)
    x = photo_batch(["astronaut"], s)
    y = x.roll(3, -1)
    ref = build(name)(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = build(name)(x, y)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, ref)
    half = build(name)(x.bfloat16(), y.bfloat16())
    assert torch.isfinite(half) and half.item() == pytest.approx(ref.item(), rel=0.05)


@pytest.mark.parametrize("name", ["L1", "L2", "SSIM", "Watson-DCT", "Watson-DFT"])
def test_gradcheck_float64(name):
    torch.manual_seed(0)
    loss = build(name).double()
    x = (0.2 + 0.6 * torch.rand(1, 3, 8, 16, dtype=torch.float64)).requires_grad_(True)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).detach()
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", CORE)
def test_cuda_matches_cpu(name):
    s = _size_for(name)
    x = photo_batch(["astronaut"], s)
    y = x.roll(3, -1)
    loss = build(name)
    torch.testing.assert_close(loss.cuda()(x.cuda(), y.cuda()).cpu(), loss.cpu()(x, y), rtol=1e-4, atol=1e-5)


# --- Watson specifics ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BLOCK_LOSSES)
def test_default_is_independent_of_the_batch_but_faithful_is_not(name):
    x = photo_batch(["astronaut", "coffee"], 32)
    y = x.roll(2, -1)
    dark = x * torch.tensor([1.0, 0.3]).view(2, 1, 1, 1)  # second image much darker
    default = build(name, reduction="none")
    alone = torch.stack([default(dark[i : i + 1], y[i : i + 1] * (0.3 if i else 1.0))[0] for i in range(2)])
    together = default(dark, y * torch.tensor([1.0, 0.3]).view(2, 1, 1, 1))
    torch.testing.assert_close(together, alone)
    faithful = build(name, reduction="none", faithful=True)
    f_alone = faithful(dark[:1], y[:1])
    f_together = faithful(dark, y * torch.tensor([1.0, 0.3]).view(2, 1, 1, 1))[:1]
    assert not torch.allclose(f_alone, f_together, rtol=1e-4)


def test_luminance_floor_bounds_black_blocks():
    x = photo_batch(["astronaut"], 32)
    x[..., :8, :8] = 0.0  # one pure black block
    y = (x + 0.01).clamp(0, 1)
    floored = build("Watson-DCT")(y, x).item()
    original = build("Watson-DCT", faithful=True)(y, x).item()
    assert original > 100 * floored
    assert floored < 10


def test_random_shift_is_random_and_seedable():
    x = photo_batch(["coffee"], 32)
    y = x.roll(1, -2)
    loss = build("Watson-DCT", deterministic=False)
    torch.manual_seed(1)
    a = [loss(x, y).item() for _ in range(6)]
    torch.manual_seed(1)
    b = [loss(x, y).item() for _ in range(6)]
    assert a == b
    assert len(set(a)) > 1
    det = build("Watson-DCT", deterministic=True)
    assert len({det(x, y).item() for _ in range(3)}) == 1


@pytest.mark.skipif(not REFERENCE_WEIGHTS.is_dir(), reason="reference weights not available")
@pytest.mark.parametrize("cs", ["RGB", "LA"])
@pytest.mark.parametrize("name,stem", [("Watson-DCT", "watson_dct"), ("Watson-DFT", "watson_fft")])
def test_original_weight_format_round_trip(name, stem, cs, reference_weights):
    loss = make_loss(name, {"colorspace": cs, "deterministic": True})
    assert not any(p.requires_grad for p in loss.parameters())  # pretrained losses are frozen
    prefix = "rgb" if cs == "RGB" else "gray"
    sd = torch.load(reference_weights / f"{prefix}_{stem}_trial0.pth", weights_only=True)
    exported = loss.original_state_dict()
    for k, v in exported.items():
        torch.testing.assert_close(v.float(), sd[k].float(), msg=k)
    fresh = make_loss(name, {"colorspace": cs, "pretrained": False, "deterministic": True})
    fresh.load_original_state_dict(exported)
    x = photo_batch(["astronaut"], 32)
    torch.testing.assert_close(fresh(x, x.roll(1, -1)), loss(x, x.roll(1, -1)))


def test_untrained_watson_parameters_are_trainable():
    loss = build("Watson-DFT")
    x = photo_batch(["astronaut"], 32)
    loss(x, x.roll(1, -1)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters())


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("name", BLOCK_LOSSES)
def test_hand_written_backward_matches_autograd(name, faithful, reference_weights):
    """The fast path (frozen metric, target without grad) equals the plain autograd path (float64)."""
    torch.manual_seed(0)
    loss = genloss.get_loss(name, deterministic=True, faithful=faithful).double()
    x = photo_batch(["astronaut", "coffee"], 32).double()
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    a = x.clone().requires_grad_(True)
    fast = loss(a, y)
    fast.backward()
    b = x.clone().requires_grad_(True)
    slow = loss(b, y.clone().requires_grad_(True))  # a target that needs grad forces autograd
    slow.backward()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_stable_phase_distance_has_accurate_float32_gradients(golden, reference_weights):
    """The default phase term gives float32 gradients closer to the exact (float64) ones than the
    paper's formula, whose acos(cos(d) (1 - 1e-7)) loses all digits for nearly aligned phases."""
    from conftest import golden_pair

    a, b = golden_pair(golden, {"input": "dist_astronaut_64_blur", "target": "ref_astronaut_64"}, "RGB")

    def grad(dtype, faithful):
        x = a.to(dtype).requires_grad_(True)
        genloss.get_loss("Watson-DFT", deterministic=True, faithful=faithful).to(dtype)(x, b.to(dtype)).backward()
        return x.grad.double()

    exact = grad(torch.float64, True)
    torch.testing.assert_close(grad(torch.float64, False), exact, rtol=1e-8, atol=1e-8)  # same function
    err_default = (grad(torch.float32, False) - exact).norm() / exact.norm()
    err_original = (grad(torch.float32, True) - exact).norm() / exact.norm()
    assert err_default < 0.5 * err_original


@pytest.mark.parametrize("name", BLOCK_LOSSES)
def test_double_backward_is_an_error_on_the_fast_path_and_works_without_it(name):
    x = photo_batch(["coffee"], 16).requires_grad_(True)
    y = x.detach().roll(1, -1)
    loss = build(name)
    loss.requires_grad_(False)
    with pytest.raises(RuntimeError, match="fast_backward = False"):
        torch.autograd.grad(loss(x, y), x, create_graph=True)
    loss.fast_backward = False
    (g,) = torch.autograd.grad(loss(x, y), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), x)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0


def test_every_loss_of_the_paper_is_registered_with_a_description():
    paper = ["L1", "L2", "SSIM", "Adaptive", "Watson-DCT", "Watson-DFT", "Watson-VGG", "Deeploss-VGG",
             "Deeploss-Squeeze"]
    names = genloss.list_losses()
    assert set(paper) <= set(names)
    assert genloss.LossProvider().loss_functions == names
    for name in names:
        info = genloss.loss_info(name.lower())
        assert info.name == name and len(info.description) > 10
    assert genloss.list_losses(family="watson") == ["Watson-DCT", "Watson-DFT", "Watson-VGG"]
    # names are case-insensitive, so are families (list_losses("Watson") was silently empty)
    assert genloss.list_losses(family="Watson") == genloss.list_losses(family="watson")
    with pytest.raises(ValueError, match=r"no loss of family 'perceptual'; families: .*watson"):
        genloss.list_losses(family="perceptual")
    assert sorted(n for n in names if genloss.loss_info(n).paper) == sorted(paper)


def test_an_option_fixed_by_the_entry_is_named_so():
    """Deeploss-VGG's entry sets DeepLoss' backbone: passing it got the hint "did you mean 'backbone_weights'?"."""
    with pytest.raises(TypeError, match=r"'backbone' \(fixed by this entry: choose another entry instead\)"):
        genloss.get_loss("Deeploss-VGG", backbone="squeeze")


@pytest.mark.parametrize("name", ["L1", "L2"])
def test_pixel_losses_first_and_second_derivatives(name):
    """The fixed-target fast path of L1/L2 equals autograd of the formula, also for double backward."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    loss = genloss.get_loss(name)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,))
    assert torch.autograd.gradgradcheck(lambda a: loss(a, y), (x,))
    ref = (x - y).abs().sum() if name == "L1" else (x - y).pow(2).sum()
    torch.testing.assert_close(loss(x, y), ref)
    (g,) = torch.autograd.grad(loss(x, y), x, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(g, g_ref)


def test_each_loss_class_has_its_own_forward_code_and_inherited_forwards_are_kept():
    """torch.compile's 8 graphs are per code object: each class gets a copy of ImageLoss.forward, but only
    where that is what it would run; a forward from an intermediate class or a mixin is kept."""
    import pickle

    from genloss import L1Loss, SSIMLoss
    from genloss.losses.base import ImageLoss

    assert L1Loss.forward.__code__ is not SSIMLoss.forward.__code__
    assert L1Loss.forward.__code__ is not ImageLoss.forward.__code__
    assert L1Loss.forward.__qualname__ == "L1Loss.forward" and pickle.loads(pickle.dumps(L1Loss.forward))

    class Doubled(ImageLoss):
        def per_image(self, a, b):
            return (a - b).abs().flatten(1).sum(1)

        def forward(self, a, b):
            return 2 * super().forward(a, b)

    class FromDoubled(Doubled):
        pass

    class Mixin:
        def forward(self, a, b):
            return torch.tensor(-1.0)

    class MixedL1(Mixin, L1Loss):
        pass

    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert FromDoubled()(x, y) == Doubled()(x, y)  # the intermediate class' forward, doubled
    torch.testing.assert_close(Doubled()(x, y), 2 * (x - y).abs().sum())
    assert MixedL1()(x, y) == -1.0


def test_a_user_loss_without_future_annotations_gets_its_options_checked_by_kind():
    """Written without `from __future__ import annotations` a class' annotations are types (bool, float,
    Optional[float]), not strings: the flag check used to miss them, so squared='False' turned it on."""
    from _plain_annotations import PlainAnnotationsLoss

    with pytest.raises(TypeError, match="PlainAnnotationsLoss: squared must be True or False, got 'False'"):
        PlainAnnotationsLoss(squared="False")
    with pytest.raises(ValueError, match="gain must be a finite number, got nan"):
        PlainAnnotationsLoss(gain=float("nan"))
    with pytest.raises(TypeError, match="repeats must be an integer, got True"):
        PlainAnnotationsLoss(repeats=True)
    with pytest.raises(TypeError, match="bias must be a number or None, got '1'"):
        PlainAnnotationsLoss(bias="1")
    assert PlainAnnotationsLoss(bias=None, gain=2).gain == 2.0
