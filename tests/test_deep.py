"""Deeploss-VGG / Deeploss-Squeeze: golden values, agreement with the lpips package, backbone
resolution, greyscale handling, gradients, precision and errors.

ImageNet backbones cannot be downloaded here: Squeeze runs on the golden random SqueezeNet (the
backbone the golden values were computed with), VGG on random weights and tiny images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import pytest
import torch
from conftest import GOLDEN, golden_pair, photo_batch

import genloss
import genloss.hub
from genloss.losses.deep import BACKBONES, DeepLoss, backbone_state_dict, inverse_norm
from genloss.weights import ChecksumError, WeightsUnavailableError, sha256sum

GOLDEN_BACKBONE = GOLDEN / "squeezenet1_1_random_seed0.pth"
SQUEEZE_FILE = BACKBONES["squeeze"].file_name  # torchvision's name: squeezenet1_1-b8a52dc0.pth
REL_TOL = 1e-4  # shared/golden/README.md

needs_golden_backbone = pytest.mark.skipif(
    not GOLDEN_BACKBONE.is_file(), reason=f"golden random SqueezeNet backbone not found at {GOLDEN_BACKBONE}"
)


def _golden_entries(cs: str) -> list[dict]:
    with open(GOLDEN / "values.json") as fh:
        return [v for v in json.load(fh)["values"] if v["metric"] == "Deeploss-Squeeze" and v["colorspace"] == cs]


@pytest.fixture(scope="module")
def golden_sd() -> dict:
    if not GOLDEN_BACKBONE.is_file():
        pytest.skip(f"golden random SqueezeNet backbone not found at {GOLDEN_BACKBONE}")
    return torch.load(GOLDEN_BACKBONE, map_location="cpu", weights_only=True)


@pytest.fixture
def squeeze(reference_weights, golden_sd):
    """Deeploss-Squeeze, RGB, tuned linear weights on the golden backbone, per-image values."""
    return genloss.get_loss("Deeploss-Squeeze", reduction="none", backbone_weights=golden_sd)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return photo_batch(["astronaut", "chelsea", "coffee"], 32)


def _distorted(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


# ------------------------------------------------------------------------------------------------
# fidelity
# ------------------------------------------------------------------------------------------------
@needs_golden_backbone
@pytest.mark.parametrize("cs", ["RGB", "LA"])
def test_golden_values(cs, golden, reference_weights):
    """Every Deeploss-Squeeze entry of shared/golden, with the golden backbone as override."""
    entries = _golden_entries(cs)
    assert entries
    loss = genloss.LossProvider().get_loss_function("Deeploss-Squeeze", colorspace=cs, reduction="sum",
                                                    deterministic=True, backbone_weights=str(GOLDEN_BACKBONE))
    for e in entries:
        a, b = golden_pair(golden, e, cs)
        with torch.no_grad():
            value = loss(a, b).item()
        if e["input"] == e["target"]:
            assert value == 0.0
        else:
            assert value == pytest.approx(e["value"], rel=REL_TOL), e


@needs_golden_backbone
def test_lpips_normalisation_changes_the_published_values(golden, reference_weights):
    """normalize='lpips' is a different metric: the tuned weights reproduce the original only with 'original'."""
    e = next(e for e in _golden_entries("RGB") if e["input"] == "dist_astronaut_64_blur")
    a, b = golden_pair(golden, e, "RGB")
    loss = genloss.get_loss("Deeploss-Squeeze", backbone_weights=str(GOLDEN_BACKBONE), normalize="lpips")
    with torch.no_grad():
        assert abs(loss(a, b).item() / e["value"] - 1) > 0.05


def _lpips_model(net: str, backbone_sd: dict):
    """The lpips package (its own linear weights, shipped with it) with our backbone weights copied in."""
    lpips = pytest.importorskip("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of lpips' pretrained= argument
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    own = model.net.state_dict()
    mapped = {}
    for key in own:  # slice{k}.{layer index}.{param} -> features.{layer index}.{param}
        mapped[key] = backbone_sd["features." + key.split(".", 1)[1]]
    model.net.load_state_dict(mapped)
    return model


@pytest.mark.parametrize("normalize", ["lpips", "original"])
def test_agrees_with_lpips_package(normalize, golden_sd, photos):
    """Same backbone and LPIPS' own linear weights: normalize='lpips' equals lpips(normalize=True)
    on [0, 1] images; 'original' equals feeding the [0, 1] images to lpips as if they were [-1, 1]."""
    model = _lpips_model("squeeze", golden_sd)
    ours = DeepLoss("squeeze", pretrained=False, reduction="none", normalize=normalize, backbone_weights=golden_sd)
    ours.load_linear_weights({k: v for k, v in model.state_dict().items() if k.startswith("lins.")})
    x, y = _distorted(photos), photos
    with torch.no_grad():
        want = model(x, y, normalize=(normalize == "lpips")).flatten()
        got = ours(x, y)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# backbone resolution
# ------------------------------------------------------------------------------------------------
def _clean_backbone_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(genloss.losses.deep.ENV_BACKBONE_DIR, raising=False)


@needs_golden_backbone
@pytest.mark.parametrize("where", ["hub_cache", "env_dir"])
def test_backbone_found_in_hub_cache_and_env_dir(where, monkeypatch, tmp_path, golden, reference_weights):
    """A file under torchvision's name in $TORCH_HOME/hub/checkpoints or $GENLOSS_BACKBONE_DIR is used."""
    _clean_backbone_env(monkeypatch, tmp_path)
    folder = tmp_path / "torch_home" / "hub" / "checkpoints" if where == "hub_cache" else tmp_path / "backbones"
    folder.mkdir(parents=True)
    (folder / SQUEEZE_FILE).symlink_to(GOLDEN_BACKBONE)
    # The golden file is a random backbone under torchvision's name: its sha256 does not start with the
    # name's b8a52dc0, which the resolver checks; declare its own prefix for this test.
    spec = genloss.hub.WEIGHT_FILES[SQUEEZE_FILE]
    monkeypatch.setitem(genloss.hub.WEIGHT_FILES, SQUEEZE_FILE,
                        dataclasses.replace(spec, sha256_prefix=sha256sum(GOLDEN_BACKBONE)[:8]))
    if where == "env_dir":
        monkeypatch.setenv(genloss.losses.deep.ENV_BACKBONE_DIR, str(folder))
    e = next(e for e in _golden_entries("RGB") if e["input"] == "dist_chelsea_64_jpeg")
    loss = genloss.get_loss("Deeploss-Squeeze")
    with torch.no_grad():
        assert loss(*golden_pair(golden, e, "RGB")).item() == pytest.approx(e["value"], rel=REL_TOL)


def test_missing_backbone_offline_names_url_file_and_place(monkeypatch, tmp_path, reference_weights):
    _clean_backbone_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GENLOSS_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        genloss.get_loss("Deeploss-Squeeze")
    msg = str(err.value)
    assert "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth" in msg
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / SQUEEZE_FILE) in msg
    assert "GENLOSS_BACKBONE_DIR" in msg and "backbone_weights=" in msg


def test_failed_download_raises_weights_unavailable(monkeypatch, tmp_path):
    import urllib.error

    _clean_backbone_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(WeightsUnavailableError, match="no network") as err:
        backbone_state_dict(BACKBONES["vgg"])
    assert "vgg16-397923af.pth" in str(err.value) and "528 MB" in str(err.value)


@needs_golden_backbone
def test_backbone_file_whose_hash_contradicts_its_name_is_refused(monkeypatch, tmp_path, reference_weights):
    """torchvision names carry their sha256 prefix: a different file under that name is not trusted."""
    _clean_backbone_env(monkeypatch, tmp_path)
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / SQUEEZE_FILE).symlink_to(GOLDEN_BACKBONE)
    with pytest.raises(ChecksumError, match="b8a52dc0"):
        genloss.get_loss("Deeploss-Squeeze")


def test_missing_tuned_linear_weights(golden_sd):
    """No weights_dir / GENLOSS_WEIGHTS_DIR and offline: the tuned file's error, not a silent untuned loss."""
    with pytest.raises(WeightsUnavailableError, match="rgb_pnet_lin_squeeze_trial0.pth"):
        genloss.get_loss("Deeploss-Squeeze", backbone_weights=golden_sd)


def test_bad_backbone_weights_are_rejected(tmp_path, golden_sd):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeepLoss("squeeze", pretrained=False, backbone_weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="do not fit torchvision's vgg16"):
        DeepLoss("vgg", pretrained=False, backbone_weights=golden_sd)  # a SqueezeNet state dict for VGG


def test_vgg_backbone_override_file(tmp_path):
    """A VGG16 state dict written to a file is loaded (features; classifier keys are ignored)."""
    torch.manual_seed(1)
    ref = DeepLoss("vgg", pretrained=False, pretrained_backbone=False)
    sd = {"features." + k.split(".", 2)[2]: v for k, v in ref.backbone.state_dict().items()}
    assert "features.28.weight" in sd  # the last conv of VGG16 (relu5_3's)
    sd["classifier.6.bias"] = torch.zeros(1000)  # as in a full torchvision VGG16 state dict
    path = tmp_path / "vgg16-test.pth"
    torch.save(sd, path)
    loaded = DeepLoss("vgg", pretrained=False, backbone_weights=str(path))
    for (ka, a), (kb, b) in zip(ref.backbone.state_dict().items(), loaded.backbone.state_dict().items(),
                                strict=True):
        assert ka == kb and torch.equal(a, b)
    x = photo_batch(["astronaut"], 32)
    with torch.no_grad():
        assert loaded(_distorted(x), x).item() == pytest.approx(ref(_distorted(x), x).item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# values, reductions, greyscale
# ------------------------------------------------------------------------------------------------
def test_identical_inputs_give_zero_with_finite_zero_gradient(squeeze, photos):
    x = photos.clone().requires_grad_(True)
    out = squeeze(x, photos)
    assert torch.equal(out, torch.zeros(3))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad, torch.zeros_like(x))


def test_distances_are_positive_and_order_distortions(squeeze, photos):
    x = photos
    mild = 0.9 * x + 0.1 * _distorted(x)
    strong = _distorted(_distorted(x))
    with torch.no_grad():
        d_mild, d_strong = squeeze(mild, x), squeeze(strong, x)
    assert (d_mild > 0).all() and (d_strong > d_mild).all()


def test_gradient_reaches_input(squeeze, photos):
    x = _distorted(photos).requires_grad_(True)
    squeeze(x, photos).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets a gradient


def test_inverse_norm_gradient_is_finite_at_zero_vectors():
    """Dead ReLU positions (all-zero feature vectors): sqrt(sum f^2) gives a NaN gradient there."""
    f = torch.zeros(1, 4, 2, 2)
    f[0, :, 0, 0] = torch.tensor([1.0, 2.0, 0.0, 2.0])
    f.requires_grad_(True)
    (f * inverse_norm(f)).sum().backward()
    assert torch.isfinite(f.grad).all()
    torch.testing.assert_close(f.grad[0, :, 1, 1], torch.full((4,), 1e10))  # d/df f / (0 + eps)
    torch.testing.assert_close(inverse_norm(f.detach()), 1 / (f.detach().pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
    g = f.detach().clone().requires_grad_(True)
    (g / (g.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).sum().backward()
    assert torch.isnan(g.grad).any()  # why vector_norm is used


def test_reductions(reference_weights, golden_sd, photos):
    x = _distorted(photos)
    per = {r: genloss.get_loss("Deeploss-Squeeze", reduction=r, backbone_weights=golden_sd) for r in
           ("none", "sum", "mean")}
    with torch.no_grad():
        none, total, mean = (per[r](x, photos) for r in ("none", "sum", "mean"))
    assert none.shape == (3,) and total.shape == () and mean.shape == ()
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.mean())


def test_batch_of_three_equals_batches_of_one(reference_weights, golden_sd, photos):
    """Per-image values do not depend on the batch; for LA also with N = 3 (the original's N == 3 bug)."""
    x = _distorted(photos)
    for cs in ("RGB", "LA"):
        loss = genloss.get_loss("Deeploss-Squeeze", colorspace=cs, reduction="none", backbone_weights=golden_sd)
        with torch.no_grad():
            batch = loss(x, photos)
            single = torch.cat([loss(x[i : i + 1], photos[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-8)


def test_greyscale_rgb_input_equals_bt601_grey_input(reference_weights, golden_sd, photos):
    loss = genloss.get_loss("Deeploss-Squeeze", colorspace="LA", reduction="none", backbone_weights=golden_sd)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x, y = _distorted(photos), photos
    with torch.no_grad():
        from_rgb = loss(x, y)
        from_grey = loss((x * w).sum(1, keepdim=True), (y * w).sum(1, keepdim=True))
        rgb_metric = genloss.get_loss("Deeploss-Squeeze", reduction="none", backbone_weights=golden_sd)(x, y)
    torch.testing.assert_close(from_rgb, from_grey, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(from_rgb, rgb_metric, rtol=1e-2)  # LA really discards colour


# ------------------------------------------------------------------------------------------------
# module behaviour: state dict, freezing, devices, precision
# ------------------------------------------------------------------------------------------------
def test_state_dict_holds_only_linear_weights(reference_weights, golden_sd, photos):
    loss = genloss.get_loss("Deeploss-Squeeze", backbone_weights=golden_sd)
    sd = loss.state_dict()
    assert sorted(sd) == sorted(f"layer_weights.{k}" for k in range(7))
    # the paper's file format loads through the standard load_state_dict too
    paper = torch.load(reference_weights / "rgb_pnet_lin_squeeze_trial0.pth", weights_only=True)
    fresh = DeepLoss("squeeze", pretrained=False, backbone_weights=golden_sd)
    fresh.load_state_dict(paper)
    for k in range(7):
        torch.testing.assert_close(fresh.layer_weights[k], paper[f"lin{k}.model.1.weight"].flatten())
    x = _distorted(photos)
    with torch.no_grad():
        assert fresh(x, photos).item() == pytest.approx(loss(x, photos).item(), rel=1e-6)
    # a parent module's checkpoint round-trips without the backbone
    parent = torch.nn.ModuleDict({"criterion": fresh})
    assert not any("backbone" in k for k in parent.state_dict())
    parent.load_state_dict(parent.state_dict())


def test_wrong_linear_weight_files_are_rejected(reference_weights, golden_sd):
    loss = DeepLoss("squeeze", pretrained=False, backbone_weights=golden_sd)
    vgg_file = torch.load(reference_weights / "rgb_pnet_lin_vgg_trial0.pth", weights_only=True)
    with pytest.raises(ValueError, match="missing lin5, lin6"):
        loss.load_linear_weights(vgg_file)  # 5 layers for a 7-layer backbone
    squeeze_file = torch.load(reference_weights / "rgb_pnet_lin_squeeze_trial0.pth", weights_only=True)
    vgg = DeepLoss("vgg", pretrained=False, pretrained_backbone=False)
    with pytest.raises(ValueError, match="unexpected"):
        vgg.load_linear_weights(squeeze_file)
    with pytest.raises(ValueError, match="layer 3 have 384 values"):
        vgg.load_linear_weights({k: v for k, v in squeeze_file.items() if int(k[3]) < 5})


def test_frozen_backbone_stays_in_eval_and_moves_with_the_loss(reference_weights, golden_sd):
    loss = genloss.get_loss("Deeploss-Squeeze", backbone_weights=golden_sd)
    assert not any(p.requires_grad for p in loss.parameters())  # tuned metric: all frozen
    loss.train()
    assert loss.training and not loss.backbone.training
    loss = loss.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in loss.backbone.parameters())
    untuned = genloss.get_loss("Deeploss-Squeeze", pretrained=False, backbone_weights=golden_sd)
    assert all(p.requires_grad for p in untuned.layer_weights)  # tunable head, frozen backbone
    assert not any(p.requires_grad for p in untuned.backbone.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in untuned.layer_weights)


def test_gradcheck_float64(golden_sd):
    loss = DeepLoss("squeeze", pretrained=False, reduction="sum", backbone_weights=golden_sd).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for w in loss.layer_weights:
            w.uniform_(0.1, 1.0)
    y = photo_batch(["coffee"], 17).double()
    x = (0.8 * y + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), fast_mode=True, eps=1e-6, atol=1e-6)


def test_bfloat16_autocast_and_half_inputs(squeeze, photos):
    x = _distorted(photos)
    with torch.no_grad():
        ref = squeeze(x, photos)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = squeeze(x, photos)
        half = squeeze(x.bfloat16(), photos.bfloat16())
    assert auto.dtype == torch.float32 and half.dtype == torch.float32
    torch.testing.assert_close(auto, ref)
    torch.testing.assert_close(half, ref, rtol=0.05, atol=0)  # only the input rounding differs


# ------------------------------------------------------------------------------------------------
# VGG (random backbone, tiny inputs: VGG16 on the CPU is slow)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cs", ["RGB", "LA"])
def test_vgg_shapes_gradients_and_tuned_weights(cs, reference_weights):
    torch.manual_seed(0)
    loss = genloss.get_loss("Deeploss-VGG", colorspace=cs, reduction="none", pretrained_backbone=False)
    tuned = torch.load(reference_weights / f"{'rgb' if cs == 'RGB' else 'gray'}_pnet_lin_vgg_trial0.pth",
                       weights_only=True)
    torch.testing.assert_close(loss.layer_weights[4], tuned["lin4.model.1.weight"].flatten())
    y = photo_batch(["astronaut", "chelsea"], 32)
    if cs == "LA":
        y = y.mean(1, keepdim=True)
    x = _distorted(y).requires_grad_(True)
    out = loss(x, y)
    assert out.shape == (2,) and (out > 0).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert loss(y, y).abs().max() == 0


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_bad_input_errors(reference_weights, golden_sd):
    rgb = genloss.get_loss("Deeploss-Squeeze", backbone_weights=golden_sd)
    grey = genloss.get_loss("Deeploss-Squeeze", colorspace="LA", backbone_weights=golden_sd)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="input has 1 channel, expected 3"):
        rgb(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="input has 2 channels, expected 1 or 3"):
        grey(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="16x16 pixels, smaller than the minimum 17x17"):
        rgb(x[..., :16, :16], x[..., :16, :16])
    with pytest.raises(TypeError, match="floating point"):
        rgb((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="same shape"):
        rgb(x, x[:1])
    with pytest.raises(ValueError, match="input is on meta but the loss .* is on cpu"):
        rgb.per_image(x.to("meta"), x.to("meta"))  # (no second device here; autocast rejects meta)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        rgb(bad, x)


def test_bad_options():
    with pytest.raises(ValueError, match="normalize must be one of"):
        DeepLoss("squeeze", pretrained=False, normalize="imagenet", pretrained_backbone=False)
    with pytest.raises(ValueError, match="backbone must be one of"):
        DeepLoss("alex", pretrained=False, pretrained_backbone=False)


def test_registry_entries():
    assert {"Deeploss-VGG", "Deeploss-Squeeze"} <= set(genloss.list_losses(family="deep"))
    info = genloss.loss_info("deeploss-squeeze")
    assert info.weight_files == {"RGB": ("rgb_pnet_lin_squeeze_trial0.pth",),
                                 "LA": ("gray_pnet_lin_squeeze_trial0.pth",)}
    assert os.path.basename(BACKBONES["vgg"].weights.url) == "vgg16-397923af.pth"


# ------------------------------------------------------------------------------------------------
# dtypes, tracing, torch.func, functional twin
# ------------------------------------------------------------------------------------------------
def _untuned_squeeze(golden_sd, **kw) -> DeepLoss:
    loss = DeepLoss("squeeze", pretrained=False, reduction="none", backbone_weights=golden_sd, **kw)
    torch.manual_seed(0)
    with torch.no_grad():
        for w in loss.layer_weights:
            w.uniform_(0.1, 1.0)
    return loss


def test_float64_inputs_give_float64_without_converting_the_module(golden_sd):
    loss = _untuned_squeeze(golden_sd)
    y = photo_batch(["astronaut", "chelsea"], 24)
    x = _distorted(y)
    with torch.no_grad():
        value32 = loss(x, y)
        value64 = loss(x.double(), y.double())
        mixed = loss(x.double(), y)  # the wider of the two dtypes
        # the reference: the same module converted to float64 as a whole
        ref64 = _untuned_squeeze(golden_sd).double()(x.double(), y.double())
    assert value32.dtype == torch.float32 and value64.dtype == torch.float64 and mixed.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in loss.parameters())  # not mutated
    torch.testing.assert_close(value64, ref64, rtol=1e-12, atol=0)
    torch.testing.assert_close(value64.float(), value32, rtol=1e-4, atol=1e-7)
    # a float64 module given float32 images computes in float32, as every loss does
    assert _untuned_squeeze(golden_sd).double()(x, y).dtype == torch.float32
    # gradients reach the (float32) trainable weights through the per-call cast
    loss(x.double(), y.double()).sum().backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in loss.layer_weights)


def test_torch_compile_fullgraph_matches_eager(golden_sd):
    torch._dynamo.reset()
    loss = _untuned_squeeze(golden_sd).eval()
    y = photo_batch(["astronaut", "chelsea"], 24)
    x = _distorted(y)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, y), loss(x, y), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(compiled(x.double(), y.double()), loss(x.double(), y.double()))


def test_func_grad_and_vmap_match_backward_and_loop(golden_sd):
    loss = _untuned_squeeze(golden_sd)
    # float64 (through the per-call cast of the backbone): under torch.func the CPU path keeps the
    # default memory format, whose float32 convolutions round differently from channels-last ones
    y = photo_batch(["astronaut", "chelsea"], 20).double()
    x = _distorted(y)

    def total(a):
        return loss(a, y).sum()

    a = x.clone().requires_grad_(True)
    total(a).backward()
    torch.testing.assert_close(torch.func.grad(total)(x), a.grad, rtol=1e-9, atol=1e-15)
    # with respect to the target too (its features then keep their graph)
    b = y.clone().requires_grad_(True)
    loss(x, b).sum().backward()
    torch.testing.assert_close(torch.func.grad(lambda t: loss(x, t).sum())(y), b.grad, rtol=1e-9, atol=1e-15)
    xs, ys = torch.stack([x, y]), torch.stack([y, y])
    with torch.no_grad():
        torch.testing.assert_close(torch.func.vmap(loss)(xs, ys),
                                   torch.stack([loss(xs[i], ys[i]) for i in range(2)]), rtol=1e-9, atol=1e-15)


def test_functional_twin_equals_class(reference_weights, golden_sd, photos):
    from genloss.functional import deep_loss

    x = _distorted(photos)
    path = str(GOLDEN_BACKBONE)
    with torch.no_grad():
        want = DeepLoss("squeeze", reduction="none", backbone_weights=path)(x, photos)
        got = deep_loss(x, photos, "squeeze", reduction="none", backbone_weights=path)
    torch.testing.assert_close(got, want)
