"""Watson-VGG: agreement with an independent float64 implementation of the paper's formulas, the
paper's weight-file layout, greyscale handling, gradients (gradcheck, torch.func, torch.compile),
dtypes and errors.

The tuned files and the ImageNet VGG16 cannot be downloaded here: the tests write checkpoints in the
paper's key layout (``WatsonDistanceVgg.state_dict()``: ``vgg.slice{1..5}.*``, ``shift``, ``scale``,
``t{l}_tild``, ``w{l}_tild``, ``beta``) with a random VGG16 and random plausible Watson parameters.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import photo_batch

import genloss
from genloss.losses.deep import BACKBONES, ENV_BACKBONE_DIR
from genloss.losses.watson_vgg import WatsonVGG
from genloss.weights import WeightsUnavailableError

EPS = 1e-10
CHANNELS = (64, 128, 256, 512, 512)
# torchvision's VGG16 "D" configuration up to relu5_3: conv widths, "M" = 2x2 max pooling
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# index in vgg16.features after which the paper taps a feature (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
TAPS = (3, 8, 15, 22, 29)
# the paper's slices of vgg16.features: slice k holds indices [start_k, end_k)
SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


# ------------------------------------------------------------------------------------------------
# checkpoints in the paper's layout
# ------------------------------------------------------------------------------------------------
def random_vgg_features(seed: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Random VGG16 convolutions {features index: (weight, bias)} with He-scaled weights."""
    g = torch.Generator().manual_seed(seed)
    convs, idx, c_in = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        w = torch.randn(v, c_in, 3, 3, generator=g) * math.sqrt(2.0 / (9 * v))
        convs[idx] = (w, 0.05 * torch.randn(v, generator=g))
        c_in, idx = v, idx + 2  # conv, relu
    return convs


def paper_layout(convs, seed: int, *, backbone: bool = True) -> dict[str, torch.Tensor]:
    """A state dict as ``WatsonDistanceVgg.state_dict()`` writes it, with random plausible values."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    if backbone:
        for i, (w, b) in convs.items():
            k = next(n for n, (a, e) in enumerate(SLICES, 1) if a <= i < e)
            sd[f"vgg.slice{k}.{i}.weight"], sd[f"vgg.slice{k}.{i}.bias"] = w, b
        sd["shift"] = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
        sd["scale"] = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
    for layer, c in enumerate(CHANNELS):
        sd[f"t{layer}_tild"] = 0.5 * torch.randn(c, generator=g)  # sensitivities ~ 0.4 ... 2.7
        w = 0.1 + 0.8 * torch.rand((), generator=g)
        sd[f"w{layer}_tild"] = torch.log(w / (1 - w))
    sd["beta"] = 0.8 + 1.5 * torch.rand((), generator=g)
    return sd


def torchvision_layout(convs) -> dict[str, torch.Tensor]:
    sd = {}
    for i, (w, b) in convs.items():
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = w, b
    return sd


@pytest.fixture(scope="module")
def convs():
    return random_vgg_features(0)


@pytest.fixture(scope="module")
def tuned(convs):
    """The two tuned files of the paper (random values), keyed by colorspace."""
    return {"RGB": paper_layout(convs, 1), "LA": paper_layout(convs, 2)}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, tuned):
    folder = tmp_path_factory.mktemp("watson_vgg_weights")
    torch.save(tuned["RGB"], folder / "rgb_watson_vgg_trial0.pth")
    torch.save(tuned["LA"], folder / "gray_watson_vgg_trial0.pth")
    return folder


@pytest.fixture(autouse=True)
def _no_imagenet_backbone(monkeypatch, tmp_path):
    """No ImageNet VGG16 anywhere: what is tested must not need it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_BACKBONE_DIR, raising=False)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target): two photographs and a blurred, noisy version; non-square, 32 x 24."""
    y = photo_batch(["astronaut", "coffee"], 32)[..., 4:28]
    g = torch.Generator().manual_seed(3)
    x = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
    x = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


# ------------------------------------------------------------------------------------------------
# an independent, literal float64 implementation of the paper's formulas
# ------------------------------------------------------------------------------------------------
def reference(x: torch.Tensor, y: torch.Tensor, sd: dict[str, torch.Tensor], grey: bool = False) -> torch.Tensor:
    """Per-image Watson-VGG distance (N,) in float64 from a paper-layout state dict."""
    x, y = x.double(), y.double()
    if grey:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
        x, y = ((v * luma).sum(1, keepdim=True) if v.shape[1] == 3 else v for v in (x, y))
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    shift, scale = sd["shift"].double(), sd["scale"].double()
    x, y = (x - shift) / scale, (y - shift) / scale
    convs = {}
    for k, v in sd.items():
        if k.startswith("vgg."):
            _, _, i, kind = k.split(".")
            convs.setdefault(int(i), {})[kind] = v.double()

    def features(h: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for v in VGG16_CFG:
            if v == "M":
                h, i = F.max_pool2d(h, 2, 2), i + 1
            else:
                h = F.relu(F.conv2d(h, convs[i]["weight"], convs[i]["bias"], padding=1))
                i += 2
            if i - 1 in TAPS:
                out.append(h)
        return out

    beta = sd["beta"].double()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for layer, (f0, f1) in enumerate(zip(features(y), features(x), strict=True)):
        n0 = f0 / (torch.sqrt((f0**2).sum(1, keepdim=True)) + EPS)
        n1 = f1 / (torch.sqrt((f1**2).sum(1, keepdim=True)) + EPS)
        t = torch.exp(sd[f"t{layer}_tild"].double()).view(1, -1, 1, 1).expand_as(n0)
        w = torch.sigmoid(sd[f"w{layer}_tild"].double())
        masked = (n0.abs() + EPS) ** w * t ** (1 - w)
        both = torch.stack([t, masked], dim=-1)
        s = (both * torch.softmax(both, dim=-1)).sum(-1)
        d = ((n0 - n1) / s).abs()
        per_pos = (d + EPS) ** beta + EPS
        total = total + per_pos.sum(dim=(1, 2, 3)) / (f0.shape[2] * f0.shape[3])
    return total ** (1 / beta)


def reference_model(convs, seed: int = 5, **kwargs) -> WatsonVGG:
    """An untuned WatsonVGG on the random backbone, with random Watson parameters (not the init)."""
    loss = WatsonVGG(pretrained=False, pretrained_backbone=False, backbone_weights=torchvision_layout(convs),
                     **kwargs)
    loss.load_original_state_dict(paper_layout(convs, seed, backbone=False))
    return loss


# ------------------------------------------------------------------------------------------------
# fidelity
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cs", ["RGB", "LA"])
def test_tuned_file_matches_reference(cs, weights_dir, tuned, pair):
    """The tuned file loads through the normal path (backbone from the file, no ImageNet download)."""
    x, y = pair
    if cs == "LA":
        x, y = x[:, :1], y[:, :1]
    loss = WatsonVGG(colorspace=cs, reduction="none", weights_dir=weights_dir)
    assert not any(p.requires_grad for p in loss.parameters())  # tuned metrics are frozen
    ref = reference(x, y, tuned[cs], grey=cs == "LA")
    with torch.no_grad():
        got64 = loss(x.double(), y.double())
        got32 = loss(x, y)
    assert got64.dtype == torch.float64 and got32.dtype == torch.float32
    torch.testing.assert_close(got64, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(got32.double(), ref, rtol=2e-4, atol=0)
    # the two images differ, and so do their distances: the comparison is not of constants
    assert ref[0] > 1.0 and abs(ref[0] - ref[1]) > 1e-3 * ref[0]


def test_reductions_and_registry(weights_dir, tuned, pair):
    x, y = (v.double() for v in pair)
    ref = reference(x, y, tuned["RGB"])
    for name in ("Watson-VGG", "Watson-vgg"):
        loss = genloss.get_loss(name, weights_dir=weights_dir)
        assert isinstance(loss, WatsonVGG)
        with torch.no_grad():
            torch.testing.assert_close(loss(x, y), ref.sum(), rtol=1e-10, atol=0)
    mean = WatsonVGG(reduction="mean", weights_dir=weights_dir)
    with torch.no_grad():
        torch.testing.assert_close(mean(x, y), ref.mean(), rtol=1e-10, atol=0)
    with pytest.raises(TypeError, match="pretrained_backbone"):
        genloss.get_loss("Watson-VGG", deterministic=True)  # unknown option: the valid ones are listed


def test_greyscale_rgb_input_is_bt601_grey_whatever_the_batch_size(weights_dir, tuned, pair):
    """LA converts 3-channel input with BT.601 for every batch size (the paper's wrapper only for N == 3)."""
    x, y = pair
    loss = WatsonVGG(colorspace="LA", reduction="none", weights_dir=weights_dir)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    with torch.no_grad():
        from_rgb = loss(x, y)
        from_grey = loss((x * luma).sum(1, keepdim=True), (y * luma).sum(1, keepdim=True))
    torch.testing.assert_close(from_rgb, from_grey, rtol=1e-5, atol=0)
    torch.testing.assert_close(from_rgb.double(), reference(x, y, tuned["LA"], grey=True), rtol=2e-4, atol=0)


def test_watson_only_file_with_backbone_weights(tmp_path, convs, tuned, pair):
    """A tuned file without the vgg.* entries takes its backbone from backbone_weights."""
    sd = {k: v for k, v in tuned["RGB"].items() if not k.startswith("vgg.") and k not in ("shift", "scale")}
    torch.save(sd, tmp_path / "rgb_watson_vgg_trial0.pth")
    loss = WatsonVGG(reduction="none", weights_dir=tmp_path, backbone_weights=torchvision_layout(convs))
    x, y = pair
    with torch.no_grad():
        torch.testing.assert_close(loss(x.double(), y.double()), reference(x, y, tuned["RGB"]), rtol=1e-10, atol=0)


def test_missing_imagenet_backbone_says_where_to_put_it(tmp_path, tuned):
    sd = {k: v for k, v in tuned["RGB"].items() if not k.startswith("vgg.")}
    torch.save(sd, tmp_path / "rgb_watson_vgg_trial0.pth")
    spec = BACKBONES["vgg"]
    for kwargs in ({"pretrained": False}, {"weights_dir": tmp_path}):
        with pytest.raises(WeightsUnavailableError) as err:
            WatsonVGG(**kwargs)
        msg = str(err.value)
        assert spec.weights.url in msg and str(tmp_path / "torch_home" / "hub" / "checkpoints" / spec.file_name) in msg
        assert ENV_BACKBONE_DIR in msg and "backbone_weights=" in msg


def test_missing_tuned_file_is_an_error(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="gray_watson_vgg_trial0.pth"):
        WatsonVGG(colorspace="LA", weights_dir=tmp_path, pretrained_backbone=False)


# ------------------------------------------------------------------------------------------------
# the paper's file layout
# ------------------------------------------------------------------------------------------------
def _bad_files(tuned):
    good = tuned["RGB"]
    no_t3 = {k: v for k, v in good.items() if k != "t3_tild"}
    wrong_shape = {**good, "t2_tild": torch.zeros(128)}
    partial_vgg = {k: v for k, v in good.items() if k != "vgg.slice4.19.weight"}
    extra = {**good, "w5_tild": torch.tensor(0.0)}
    bad_shift = {**good, "shift": torch.zeros(1, 3, 1, 1)}
    grey_as_rgb_prefix = {"loss." + k: v for k, v in good.items()}  # a GreyscaleWrapper's own state dict
    return [
        (no_t3, "missing t3_tild"),
        (wrong_shape, r"t2_tild has shape \(128,\), expected \(256,\)"),
        (partial_vgg, "missing vgg.slice4.19.weight"),
        (extra, "unexpected w5_tild"),
        (bad_shift, "shift is"),
        (grey_as_rgb_prefix, "missing beta"),
    ]


def test_wrong_checkpoints_raise_clear_errors(tmp_path, tuned):
    for i, (sd, message) in enumerate(_bad_files(tuned)):
        folder = tmp_path / str(i)
        folder.mkdir()
        torch.save(sd, folder / "rgb_watson_vgg_trial0.pth")
        with pytest.raises(ValueError, match=message):
            WatsonVGG(weights_dir=folder, pretrained_backbone=False)
    with pytest.raises(ValueError, match="missing beta, t0_tild"):
        WatsonVGG(pretrained=False, pretrained_backbone=False).load_original_state_dict({})


def test_state_dicts_round_trip(convs, tuned, pair):
    """state_dict() holds the Watson parameters only; both layouts load into a fresh instance."""
    loss = reference_model(convs, reduction="none")
    sd = loss.state_dict()
    assert sorted(sd) == ["beta", *[f"t_tild.{i}" for i in range(5)], "w_logit"]
    assert [tuple(sd[f"t_tild.{i}"].shape) for i in range(5)] == [(c,) for c in CHANNELS]
    x, y = pair
    with torch.no_grad():
        want = loss(x, y)
        for state in (sd, loss.original_state_dict()):
            fresh = WatsonVGG(pretrained=False, pretrained_backbone=False,
                              backbone_weights=torchvision_layout(convs), reduction="none")
            fresh.load_state_dict(state)
            torch.testing.assert_close(fresh(x, y), want, rtol=0, atol=0)
    # original_state_dict() is the paper's complete layout: it loads into a new model with its backbone
    other = WatsonVGG(pretrained=False, pretrained_backbone=False, reduction="none")
    other.load_original_state_dict(loss.original_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x, y), want, rtol=0, atol=0)
    assert sorted(loss.original_state_dict()) == sorted(tuned["RGB"])
    # inside a parent module: no backbone keys in its checkpoints, and they load back
    parent = torch.nn.ModuleDict({"loss": loss, "head": torch.nn.Linear(2, 2)})
    state = parent.state_dict()
    assert not any("backbone" in k for k in state) and "loss.beta" in state
    parent.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# values and gradients
# ------------------------------------------------------------------------------------------------
def test_identical_inputs_give_the_minimum_with_a_finite_gradient(convs, pair):
    loss = reference_model(convs, reduction="none")
    _, y = pair
    x = y.clone().requires_grad_(True)
    same = loss(x, y)
    same.sum().backward()
    beta = loss.beta.detach()
    floor = (sum(CHANNELS) * (EPS**beta + EPS)) ** (1 / beta)  # every position contributes its epsilons only
    torch.testing.assert_close(same, floor.expand(2), rtol=1e-5, atol=0)
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() == 0
    with torch.no_grad():
        assert (loss((y + 0.01).clamp(0, 1), y) > same).all()


def test_gradcheck_float64():
    torch.manual_seed(0)
    loss = WatsonVGG(pretrained=False, pretrained_backbone=False, reduction="none").double()
    with torch.no_grad():  # not the symmetric initialisation: random sensitivities and exponents
        for p in loss.t_tild:
            p.normal_(0, 0.5)
        loss.w_logit.uniform_(-1.5, 1.5)
        loss.beta.fill_(1.6)
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    x = (y + 0.1 * torch.randn_like(y)).clamp(0, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), fast_mode=True)


def test_gradient_reaches_the_trainable_parameters(pair):
    loss = WatsonVGG(pretrained=False, pretrained_backbone=False)
    x, y = pair
    loss(x, y).backward()
    for p in (*loss.t_tild, loss.w_logit, loss.beta):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.backbone.parameters())


def test_torch_func_grad_and_vmap_match_autograd(convs, pair):
    # float64: in float32 the two paths (NHWC and plain memory layout) differ by rounding
    loss = reference_model(convs, reduction="sum")
    x, y = (v[..., :16, :16].double() for v in pair)
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    assert xg.grad.abs().max() > 0
    torch.testing.assert_close(torch.func.grad(lambda a: loss(a, y))(x), xg.grad, rtol=1e-9, atol=1e-12)
    per_pair = torch.func.vmap(lambda a, b: loss(a.unsqueeze(0), b.unsqueeze(0)))(x, y)
    with torch.no_grad():
        torch.testing.assert_close(per_pair, torch.stack([loss(x[i:i + 1], y[i:i + 1]) for i in range(2)]),
                                   rtol=1e-10, atol=0)


def test_torch_compile_fullgraph_matches_eager(convs, pair):
    loss = reference_model(convs, reduction="none").eval()
    x, y = (v[..., :16, :16] for v in pair)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, y), loss(x, y), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------
# dtypes, sizes, bad input, functional twin
# ------------------------------------------------------------------------------------------------
def test_dtypes(convs, pair):
    loss = reference_model(convs, reduction="none")
    x, y = (v[..., :16, :16] for v in pair)
    with torch.no_grad():
        want = reference(x, y, loss.original_state_dict())
        assert loss(x.double(), y).dtype == torch.float64
        torch.testing.assert_close(loss(x.double(), y.double()), want, rtol=1e-10, atol=0)
        half = loss(x.half(), y.half())
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, loss(x.half().float(), y.half().float()), rtol=1e-6, atol=0)
        # a float64 loss still gives float32 for float32 images (the dtype of the images decides)
        assert loss.double()(x, y).dtype == torch.float32


def test_sizes_and_bad_input(convs):
    loss = reference_model(convs, reduction="none")
    ok = torch.rand(1, 3, 16, 16)
    assert loss(ok, ok).shape == (1,)
    with pytest.raises(ValueError, match="16"):
        loss(torch.rand(1, 3, 15, 32), torch.rand(1, 3, 15, 32))
    with pytest.raises(ValueError):
        loss(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))  # RGB takes 3 channels
    with pytest.raises(ValueError):
        loss(ok * 255, ok)  # a [0, 255] image
    nan = ok.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        loss(ok, nan)
    with pytest.raises(ValueError, match="reduction"):
        WatsonVGG(pretrained=False, pretrained_backbone=False, reduction="max")


def test_value_range_and_functional_twin(convs, pair):
    x, y = pair
    options = {"pretrained": False, "pretrained_backbone": False, "backbone_weights": torchvision_layout(convs),
               "reduction": "none"}
    loss = WatsonVGG(**options)
    with torch.no_grad():
        want = loss(x, y)
        torch.testing.assert_close(genloss.functional.watson_vgg(x, y, **options), want, rtol=0, atol=0)
        # importing the module that defines it does not shadow the function (modules are named _<family>)
        importlib.import_module("genloss.functional._watson_vgg")
        from genloss.functional import watson_vgg

        torch.testing.assert_close(watson_vgg(x, y, **options), want, rtol=0, atol=0)
        scaled = WatsonVGG(**options, value_range=(-1.0, 1.0))
        torch.testing.assert_close(scaled(x * 2 - 1, y * 2 - 1), want, rtol=1e-5, atol=0)


def test_train_mode_keeps_the_backbone_in_eval_and_is_deterministic(convs, pair):
    loss = reference_model(convs, reduction="none").train()
    assert loss.training and not loss.backbone.training
    x, y = pair
    with torch.no_grad():
        torch.testing.assert_close(loss(x, y), loss(x, y), rtol=0, atol=0)


def test_weights_dir_is_searched_for_the_vgg16_backbone(monkeypatch, tmp_path):
    """weights_dir= is where WatsonVGG looks first for the VGG16 file too, as DeepLoss does: it used to be
    searched for the tuned file only, so a backbone put there beside it was never found. A file under
    VGG16's name there is read and checked (this one is corrupt: its hash contradicts the name)."""
    from genloss.weights import ChecksumError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_BACKBONE_DIR, raising=False)
    monkeypatch.setenv("GENLOSS_OFFLINE", "1")
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(WeightsUnavailableError, match=BACKBONES["vgg"].file_name):
        WatsonVGG(pretrained=False, weights_dir=folder)
    (folder / BACKBONES["vgg"].file_name).write_bytes(b"not a VGG16 checkpoint")
    with pytest.raises(ChecksumError, match=str(folder)):
        WatsonVGG(pretrained=False, weights_dir=folder)
    with pytest.raises(ChecksumError, match=str(folder)):  # the same search as DeepLoss'
        genloss.DeepLoss(backbone="vgg", pretrained=False, weights_dir=folder)
