"""Learned flow estimators: RAFT (torchvision network) and PWC-Net (plain PyTorch).

Random weights for everything structural (shapes, dtypes, gradients, size handling, checkpoint key
conversion with checkpoints written here); the accuracy tests need the real weight files and are
skipped with the reason when they are absent (tests never download).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import photo_batch
from torchvision.models.optical_flow import raft_large, raft_small

from genloss import weights as W
from genloss.corrwise.flow import FlowEstimator, get_flow, list_flows
from genloss.corrwise.flow.pwcnet import (
    PWC_WEIGHTS,
    PWCNetFlow,
    backward_warp_masked,
    convert_sniklaus_state_dict,
    cost_volume,
)
from genloss.corrwise.flow.raft import (
    RAFTFlow,
    convert_original_raft_state_dict,
    correlation_pyramid,
    lookup_correlation,
)

NAMES = ["raft", "raft-small", "pwcnet"]


def make(name: str, **kw) -> FlowEstimator:
    torch.manual_seed(0)
    if name.startswith("raft"):
        kw.setdefault("iterations", 2)
    return get_flow(name, weights=None, **kw)


@pytest.fixture(scope="module")
def pair64() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real 64x64 photographs' crops, the second shifted by 2 px."""
    big = photo_batch(["astronaut", "coffee"], 72)
    return big[..., 4:68, 4:68].contiguous(), big[..., 4:68, 2:66].contiguous()


# ----------------------------------------------------------------------------------------------------
# interface


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_learned(name):
    assert name in list_flows()
    est = make(name)
    assert isinstance(est, FlowEstimator) and est.learned is True


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(64, 64), (100, 120), (20, 30)])
def test_output_shape_any_size(name, size, pair64):
    est = make(name)
    h, w = size
    a = F.interpolate(pair64[0], size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(pair64[1], size=size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        flow = est(a, b)
    assert flow.shape == (2, 2, h, w)
    assert flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


@pytest.mark.parametrize("name", NAMES)
def test_greyscale_equals_repeated_rgb(name, pair64):
    est = make(name)
    grey = pair64[0].mean(1, keepdim=True)[:1], pair64[1].mean(1, keepdim=True)[:1]
    with torch.no_grad():
        f_grey = est(*grey)
        f_rgb = est(grey[0].repeat(1, 3, 1, 1), grey[1].repeat(1, 3, 1, 1))
    torch.testing.assert_close(f_grey, f_rgb)


@pytest.mark.parametrize("name", NAMES)
def test_batch_items_independent(name, pair64):
    """Each pair's flow does not depend on the other pairs of the batch (eval mode, no batch statistics)."""
    est = make(name)
    with torch.no_grad():
        both = est(*pair64)
        first = est(pair64[0][:1], pair64[1][:1])
    torch.testing.assert_close(both[:1], first, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_preserved(name, pair64):
    est = make(name)
    a, b = pair64[0][:1].double(), pair64[1][:1].double()
    with torch.no_grad():
        flow = est(a, b)
        ref = est(a.float(), b.float())
    assert flow.dtype == torch.float64 and flow.device == a.device
    torch.testing.assert_close(flow, ref.double())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_images_not_the_weights(name, pair64):
    est = make(name)
    a = pair64[0][:1].clone().requires_grad_(True)
    b = pair64[1][:1].clone().requires_grad_(True)
    est(a, b).square().mean().backward()
    for x in (a, b):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in est.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_stays_in_eval_mode(name):
    est = make(name)
    est.train()
    assert not any(m.training for m in est.net.modules())


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(name, pair64):
    est = make(name)
    a, b = pair64[0][:1], pair64[1][:1]
    with pytest.raises(ValueError, match="same shape"):
        est(a, b[..., :32])
    with pytest.raises(ValueError, match="channels"):
        est(a[:, :2], b[:, :2])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        est(a * 255, b * 255)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        est(a * 2 - 1, b * 2 - 1)
    with pytest.raises(TypeError, match="floating"):
        est((a * 255).to(torch.uint8), (b * 255).to(torch.uint8))


# ----------------------------------------------------------------------------------------------------
# RAFT: correlation look-up, size handling


def _naive_bilinear(volume: torch.Tensor, x: float, y: float) -> float:
    """Bilinear sample of a 2-D tensor at pixel (x, y), zero outside."""
    h, w = volume.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= xi < w and 0 <= yi < h:
                total += wx * wy * float(volume[yi, xi])
    return total


def test_correlation_lookup_matches_naive_bilinear_including_1px_levels():
    torch.manual_seed(1)
    f1, f2 = torch.randn(1, 5, 4, 6), torch.randn(1, 5, 4, 6)
    pyramid = correlation_pyramid(f1, f2, num_levels=3)  # levels 4x6, 2x3, 1x1
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(4, 6), (2, 3), (1, 1)]
    # the all-pairs volume itself
    assert torch.allclose(pyramid[0][1 * 6 + 2, 0, 3, 4], (f1[0, :, 1, 2] * f2[0, :, 3, 4]).sum() / math.sqrt(5))
    coords = torch.rand(1, 2, 4, 6) * 5 - 0.5
    r = 1
    out = lookup_correlation(pyramid, coords, r)
    assert out.shape == (1, 3 * 9, 4, 6)
    for py, px in [(0, 0), (2, 5), (3, 1)]:
        for k, volume in enumerate(pyramid):
            vol = volume[py * 6 + px, 0]
            cx, cy = coords[0, 0, py, px] / 2**k, coords[0, 1, py, px] / 2**k
            for i in range(3):
                for j in range(3):
                    expected = _naive_bilinear(vol, float(cx) + i - r, float(cy) + j - r)
                    assert float(out[0, k * 9 + i * 3 + j, py, px]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("variant", ["large", "small"])
def test_network_flow_equals_torchvision_raft_where_torchvision_runs(variant):
    torch.manual_seed(0)
    est = RAFTFlow(variant=variant, weights=None, iterations=3)
    big = photo_batch(["astronaut"], 136)
    a = big[..., :128, :128] * 2 - 1
    b = big[..., 3:131, 5:133] * 2 - 1
    with torch.no_grad():
        ours = est._network_flow(a, b)
        reference = est.net(a, b, num_flow_updates=3)[-1]
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


class _Recorder:
    """Stands in for the network: records its inputs, returns their first channel as 'flow'."""

    def __init__(self):
        self.inputs = []

    def __call__(self, a, b):
        self.inputs.append(a)
        return torch.stack([a[:, 0], a[:, 1]], dim=1)


def test_raft_input_scaling_and_padding_alignment(monkeypatch):
    est = RAFTFlow(weights=None)
    rec = _Recorder()
    monkeypatch.setattr(est, "_network_flow", rec)
    img = photo_batch(["astronaut"], 100)[..., :, :90]  # 100 x 90: padded to 104 x 96
    flow = est(img, img)
    seen = rec.inputs[0]
    assert seen.shape[-2:] == (104, 96)
    assert seen.min() >= -1 and seen.max() <= 1 and seen.min() < -0.5  # [0, 1] -> [-1, 1]
    # the crop undoes the (centred, edge-replicated) padding exactly
    torch.testing.assert_close(flow, img[:, :2] * 2 - 1)
    torch.testing.assert_close(seen[..., :2, :], seen[..., 2:3, :].expand(-1, -1, 2, -1))


@pytest.mark.parametrize(
    ("mode", "size", "network_size"),
    [("upsample", (64, 64), (128, 128)), ("native", (20, 30), (64, 96)), ("upsample", (100, 120), (128, 160))],
)
def test_raft_upsampled_inputs_rescale_the_flow(monkeypatch, mode, size, network_size):
    est = RAFTFlow(weights=None, small_inputs=mode)

    def constant_flow(a, b):
        assert a.shape[-2:] == network_size
        return torch.tensor([4.0, -2.0]).view(1, 2, 1, 1).expand(a.shape[0], 2, *a.shape[-2:])

    monkeypatch.setattr(est, "_network_flow", constant_flow)
    img = torch.rand(1, 3, *size)
    flow = est(img, img)
    h, w = size
    expected = torch.tensor([4.0 * w / network_size[1], -2.0 * h / network_size[0]]).view(1, 2, 1, 1)
    torch.testing.assert_close(flow, expected.expand_as(flow))


def test_raft_pad_mode_pads_small_inputs_to_128(monkeypatch):
    est = RAFTFlow(weights=None, small_inputs="pad")
    rec = _Recorder()
    monkeypatch.setattr(est, "_network_flow", rec)
    img = torch.rand(1, 3, 64, 64)
    flow = est(img, img)
    assert rec.inputs[0].shape[-2:] == (128, 128)
    torch.testing.assert_close(flow, img[:, :2] * 2 - 1)


def test_raft_runs_natively_at_64_where_torchvision_refuses(pair64, monkeypatch):
    """At 64x64 the coarsest correlation level is 1x1: torchvision refuses it, the original code gives NaN."""
    est = make("raft")
    with pytest.raises(ValueError, match="too small"):
        est.net(pair64[0] * 2 - 1, pair64[1] * 2 - 1, num_flow_updates=1)
    with torch.no_grad():
        assert torch.isfinite(est(*pair64)).all()
    rec = _Recorder()
    monkeypatch.setattr(est, "_network_flow", rec)
    est(*pair64)
    assert rec.inputs[0].shape[-2:] == (64, 64)  # no resizing, no padding


# ----------------------------------------------------------------------------------------------------
# RAFT weights


def _original_raft_shapes(small: bool) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of princeton-vl's RAFT (core/extractor.py, core/update.py)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, kh, kw=None):
        shapes[f"{name}.weight"] = (cout, cin, kh, kw or kh)
        shapes[f"{name}.bias"] = (cout,)

    def batchnorm(name, c):
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{t}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    def encoder(prefix, out_dim, bn):
        dims = (32, 64, 96) if small else (64, 96, 128)
        conv(f"{prefix}.conv1", dims[0] if small else 64, 3, 7)
        if bn:
            batchnorm(f"{prefix}.norm1", 64)
        cin = dims[0] if small else 64
        planes_list = (32, 64, 96) if small else (64, 96, 128)
        for li, planes in enumerate(planes_list, start=1):
            for bi in range(2):
                stride2 = li > 1 and bi == 0
                blk = f"{prefix}.layer{li}.{bi}"
                if small:  # bottleneck: 1x1 -> 3x3 -> 1x1 with planes // 4 inside
                    conv(f"{blk}.conv1", planes // 4, cin, 1)
                    conv(f"{blk}.conv2", planes // 4, planes // 4, 3)
                    conv(f"{blk}.conv3", planes, planes // 4, 1)
                else:
                    conv(f"{blk}.conv1", planes, cin, 3)
                    conv(f"{blk}.conv2", planes, planes, 3)
                    if bn:
                        batchnorm(f"{blk}.norm1", planes)
                        batchnorm(f"{blk}.norm2", planes)
                if stride2:
                    conv(f"{blk}.downsample.0", planes, cin, 1)
                    if bn:  # the same BatchNorm under two names
                        batchnorm(f"{blk}.norm3", planes)
                        batchnorm(f"{blk}.downsample.1", planes)
                cin = planes
        conv(f"{prefix}.conv2", out_dim, cin, 1)

    if small:
        encoder("fnet", 128, bn=False)
        encoder("cnet", 160, bn=False)
        conv("update_block.encoder.convc1", 96, 4 * 7 * 7, 1)
        conv("update_block.encoder.convf1", 64, 2, 7)
        conv("update_block.encoder.convf2", 32, 64, 3)
        conv("update_block.encoder.conv", 80, 128, 3)
        for g in "zrq":
            conv(f"update_block.gru.conv{g}", 96, 96 + 82 + 64, 3)
        conv("update_block.flow_head.conv1", 128, 96, 3)
        conv("update_block.flow_head.conv2", 2, 128, 3)
    else:
        encoder("fnet", 256, bn=False)
        encoder("cnet", 256, bn=True)
        conv("update_block.encoder.convc1", 256, 4 * 9 * 9, 1)
        conv("update_block.encoder.convc2", 192, 256, 3)
        conv("update_block.encoder.convf1", 128, 2, 7)
        conv("update_block.encoder.convf2", 64, 128, 3)
        conv("update_block.encoder.conv", 126, 256, 3)
        for g in "zrq":
            conv(f"update_block.gru.conv{g}1", 128, 384, 1, 5)
            conv(f"update_block.gru.conv{g}2", 128, 384, 5, 1)
        conv("update_block.flow_head.conv1", 256, 128, 3)
        conv("update_block.flow_head.conv2", 2, 256, 3)
        conv("update_block.mask.0", 256, 128, 3)
        conv("update_block.mask.2", 576, 256, 1)
    return shapes


def _random_original_raft(small: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    state = {}
    for name, shape in _original_raft_shapes(small).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.1
    for name in list(state):  # the duplicated BatchNorm must hold the same tensors under both names
        if ".norm3." in name and not small:
            state[name] = state[name.replace(".norm3.", ".downsample.1.")]
    return {f"module.{k}": v for k, v in state.items()}  # saved from nn.DataParallel, as raft-things.pth


@pytest.mark.parametrize("small", [False, True])
def test_original_raft_checkpoint_converts_onto_torchvision(small):
    original = _random_original_raft(small)
    converted = convert_original_raft_state_dict(original)
    net = (raft_small if small else raft_large)(weights=None)
    net.load_state_dict(converted, strict=True)  # every torchvision tensor covered, every shape right
    sd = net.state_dict()
    pairs = {
        "fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
        "cnet.conv2.bias": "context_encoder.conv.bias",
        "update_block.encoder.convc1.weight": "update_block.motion_encoder.convcorr1.0.weight",
        "update_block.encoder.convf2.bias": "update_block.motion_encoder.convflow2.0.bias",
        "update_block.flow_head.conv2.weight": "update_block.flow_head.conv2.weight",
        "fnet.layer2.0.downsample.0.weight": "feature_encoder.layer2.0.downsample.0.weight",
    }
    if small:
        pairs |= {
            "update_block.gru.convq.weight": "update_block.recurrent_block.convgru1.convq.weight",
            "cnet.layer3.1.conv3.weight": "context_encoder.layer3.1.convnormrelu3.0.weight",
        }
    else:
        pairs |= {
            "update_block.gru.convz2.weight": "update_block.recurrent_block.convgru2.convz.weight",
            "update_block.gru.convr1.bias": "update_block.recurrent_block.convgru1.convr.bias",
            "update_block.mask.0.weight": "mask_predictor.convrelu.0.weight",
            "update_block.mask.2.bias": "mask_predictor.conv.bias",
            "cnet.norm1.running_var": "context_encoder.convnormrelu.1.running_var",
            "cnet.layer3.0.norm3.running_mean": "context_encoder.layer3.0.downsample.1.running_mean",
            "cnet.layer1.1.norm2.weight": "context_encoder.layer1.1.convnormrelu2.1.weight",
        }
    for old, new in pairs.items():
        assert torch.equal(sd[new], original[f"module.{old}"]), (old, new)


def test_original_raft_checkpoint_file_loads_and_runs(tmp_path, pair64):
    original = _random_original_raft(small=False)
    path = tmp_path / "raft-things.pth"
    torch.save(original, path)
    reference = raft_large(weights=None)
    reference.load_state_dict(convert_original_raft_state_dict(original))
    reference.eval()
    # by path, and by name through GENLOSS_WEIGHTS_DIR-style lookup (weights_dir)
    for est in (RAFTFlow(weights=str(path), iterations=2), RAFTFlow(weights="raft-things", weights_dir=tmp_path,
                                                                     iterations=2)):
        for k, v in reference.state_dict().items():
            assert torch.equal(est.net.state_dict()[k], v), k
        a, b = photo_batch(["astronaut"], 128), photo_batch(["coffee"], 128)
        with torch.no_grad():
            expected = reference(a * 2 - 1, b * 2 - 1, num_flow_updates=2)[-1]
            # random weights give flows of hundreds of pixels: allow float rounding of the look-up
            torch.testing.assert_close(est(a, b), expected, rtol=0, atol=1e-3 * float(expected.abs().max()))


def test_original_checkpoint_rejects_foreign_and_inconsistent_keys():
    original = _random_original_raft(small=False)
    with pytest.raises(ValueError, match="unknown keys"):
        convert_original_raft_state_dict({**original, "module.something.weight": torch.zeros(1)})
    broken = dict(original)
    broken["module.cnet.layer2.0.norm3.weight"] = broken["module.cnet.layer2.0.norm3.weight"] + 1
    with pytest.raises(ValueError, match="disagree"):
        convert_original_raft_state_dict(broken)
    with pytest.raises(ValueError, match="RAFT-large checkpoint, but this estimator is RAFT-small"):
        RAFTFlow(variant="small", weights=original)


def test_raft_state_dict_round_trip(tmp_path, pair64):
    est = make("raft-small")
    path = tmp_path / "mine.pth"
    torch.save(est.state_dict(), path)  # keys under 'net.'
    torch.manual_seed(123)  # a different random init, overwritten by the file
    again = RAFTFlow(variant="small", weights=path, iterations=2)
    plain = RAFTFlow(variant="small", weights=est.net.state_dict(), iterations=2)  # torchvision layout
    with torch.no_grad():
        ref = est(*pair64)
        torch.testing.assert_close(again(*pair64), ref)
        torch.testing.assert_close(plain(*pair64), ref)
    with pytest.raises(ValueError, match="does not fit"):
        RAFTFlow(variant="large", weights=path)


def test_missing_raft_weights_offline_raise_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no torch.hub cache either
    monkeypatch.delenv(W.ENV_WEIGHTS_DIR, raising=False)
    with pytest.raises(W.WeightsUnavailableError, match="raft_large_C_T_V1-22a6c225.pth"):
        get_flow("raft")
    with pytest.raises(W.WeightsUnavailableError, match="raft_small_C_T_V2-01064c6d.pth"):
        get_flow("raft-small", weights="C_T_V2")
    with pytest.raises(W.WeightsUnavailableError, match="raft-things.pth"):
        get_flow("raft", weights="raft-things")
    with pytest.raises(W.WeightsUnavailableError, match="models.zip"):
        get_flow("raft", weights="raft-kitti")
    with pytest.raises(ValueError, match="unknown RAFT-large weights"):
        get_flow("raft", weights="C_T_V9")


def test_torchvision_file_with_wrong_hash_prefix_is_rejected(tmp_path):
    est = make("raft")
    torch.save(est.net.state_dict(), tmp_path / "raft_large_C_T_V1-22a6c225.pth")
    with pytest.raises(W.ChecksumError, match="22a6c225"):
        RAFTFlow(weights="C_T_V1", weights_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------
# PWC-Net


def test_cost_volume_matches_naive_loop():
    torch.manual_seed(2)
    f1, f2 = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    out = cost_volume(f1, f2, max_displacement=2)
    assert out.shape == (2, 25, 5, 6)
    expected = torch.zeros_like(out)
    for n in range(2):
        for y in range(5):
            for x in range(6):
                for dy in range(-2, 3):
                    for dx in range(-2, 3):
                        if 0 <= y + dy < 5 and 0 <= x + dx < 6:
                            k = (dy + 2) * 5 + (dx + 2)
                            expected[n, k, y, x] = (f1[n, :, y, x] * f2[n, :, y + dy, x + dx]).mean()
    torch.testing.assert_close(out, expected)


def test_backward_warp_shifts_and_masks_the_border():
    x = photo_batch(["astronaut"], 16)
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 2.0  # sample two pixels to the right
    flow[:, 1] = -1.0  # and one up
    out = backward_warp_masked(x, flow)
    torch.testing.assert_close(out[..., 1:, :-2], x[..., :-1, 2:])
    assert (out[..., :, -2:] == 0).all() and (out[..., :1, :] == 0).all()
    half = flow.clone()
    half[:, 0] = 0.5
    half[:, 1] = 0.0
    torch.testing.assert_close(backward_warp_masked(x, half)[..., :-1], (x[..., :-1] + x[..., 1:]) / 2)


def _sniklaus_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of sniklaus/pytorch-pwc's run.py Network, as saved in its files."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k=3):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def deconv(name, cin, cout):
        shapes[f"{name}.weight"] = (cin, cout, 4, 4)
        shapes[f"{name}.bias"] = (cout,)

    words = ["One", "Two", "Thr", "Fou", "Fiv", "Six"]
    chans = [3, 16, 32, 64, 96, 128, 196]
    for i, word in enumerate(words):
        conv(f"moduleExtractor.module{word}.0", chans[i + 1], chans[i])
        conv(f"moduleExtractor.module{word}.2", chans[i + 1], chans[i + 1])
        conv(f"moduleExtractor.module{word}.4", chans[i + 1], chans[i + 1])
    current = {6: 81, 5: 81 + 128 + 4, 4: 81 + 96 + 4, 3: 81 + 64 + 4, 2: 81 + 32 + 4}
    for level in (2, 3, 4, 5, 6):
        word = words[level - 1]
        c = current[level]
        if level < 6:
            deconv(f"module{word}.moduleUpflow", 2, 2)
            deconv(f"module{word}.moduleUpfeat", current[level + 1] + 448, 2)
        for j, cout in enumerate([128, 128, 96, 64, 32]):
            conv(f"module{word}.module{words[j]}.0", cout, c)
            c += cout
        conv(f"module{word}.moduleSix.0", 2, c)
    c = 81 + 32 + 4 + 448
    for idx, cout in zip(range(0, 14, 2), [128, 128, 128, 96, 64, 32, 2], strict=True):
        conv(f"moduleRefiner.moduleMain.{idx}", cout, c)
        c = cout
    return shapes


def test_sniklaus_checkpoint_maps_onto_pwcnet(tmp_path, pair64):
    g = torch.Generator().manual_seed(5)
    original = {k: torch.randn(s, generator=g) * 0.05 for k, s in _sniklaus_shapes().items()}
    est = make("pwcnet")
    converted = convert_sniklaus_state_dict(original)
    est.net.load_state_dict(converted, strict=True)
    sd = est.net.state_dict()
    pairs = {
        "moduleExtractor.moduleOne.0.weight": "features.levels.0.0.weight",
        "moduleExtractor.moduleSix.4.bias": "features.levels.5.4.bias",
        "moduleSix.moduleOne.0.weight": "decoders.level6.dense.0.0.weight",
        "moduleTwo.moduleFiv.0.bias": "decoders.level2.dense.4.0.bias",
        "moduleThr.moduleSix.0.weight": "decoders.level3.predict_flow.weight",
        "moduleFiv.moduleUpflow.weight": "decoders.level5.upsample_flow.weight",
        "moduleFou.moduleUpfeat.bias": "decoders.level4.upsample_features.bias",
        "moduleRefiner.moduleMain.12.weight": "context.12.weight",
    }
    for old, new in pairs.items():
        assert torch.equal(sd[new], original[old]), (old, new)
    # the same file through the estimator's loader, in both of the port's spellings
    path = tmp_path / "network-default.pytorch"
    torch.save(original, path)
    renamed = {k.replace("module", "net"): v for k, v in original.items()}
    with torch.no_grad():
        ref = est(*pair64)
        torch.testing.assert_close(PWCNetFlow(weights=path)(*pair64), ref)
        torch.testing.assert_close(PWCNetFlow(weights=renamed)(*pair64), ref)
    with pytest.raises(ValueError, match="unknown keys"):
        convert_sniklaus_state_dict({**original, "moduleSeven.weight": torch.zeros(1)})


def test_pwcnet_feeds_bgr_and_rescales_the_quarter_resolution_flow(monkeypatch):
    est = make("pwcnet")
    seen = []

    def fake_net(a, b):
        seen.append(a)
        return torch.tensor([8.0, 4.0]).view(1, 2, 1, 1).expand(a.shape[0], 2, a.shape[2] // 4, a.shape[3] // 4)

    monkeypatch.setattr(est.net, "forward", fake_net)
    img = torch.rand(1, 3, 100, 96)
    flow = est(img, img)
    assert seen[0].shape[-2:] == (128, 128)
    resized = F.interpolate(img, size=(128, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen[0], resized.flip(1))  # RGB -> BGR
    expected = torch.tensor([8.0 * 96 / 128, 4.0 * 100 / 128]).view(1, 2, 1, 1)
    torch.testing.assert_close(flow, expected.expand_as(flow))


def test_missing_pwcnet_weights_offline_raise_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(W.ENV_WEIGHTS_DIR, raising=False)
    with pytest.raises(W.WeightsUnavailableError, match="network-default.pytorch"):
        get_flow("pwcnet")
    with pytest.raises(ValueError, match="unknown PWC-Net weights"):
        get_flow("pwcnet", weights="sintel")


# ----------------------------------------------------------------------------------------------------
# accuracy with the real weights (skipped when the files are absent)


def _find(spec: W.WeightFile, hub_name: str) -> Path | None:
    """The folder holding a real weight file (looked up before the tests isolate the cache), or None."""
    try:
        local = W.find_local(spec)
    except W.ChecksumError:
        return None
    if local is not None:
        return local.parent
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return hub if (hub / hub_name).is_file() else None


def _translated_pair(size: int, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """image2 is image1 moved by (dx, dy): pixel p of image1 is at p + (dx, dy) in image2."""
    m = 8
    big = photo_batch(["astronaut", "coffee"], size + 2 * m)
    a = big[..., m : m + size, m : m + size]
    b = big[..., m - dy : m - dy + size, m - dx : m - dx + size]
    return a.contiguous(), b.contiguous()


def _epe_interior(flow: torch.Tensor, dx: float, dy: float, border: int = 8) -> float:
    target = torch.tensor([dx, dy]).view(1, 2, 1, 1)
    err = (flow - target).norm(dim=1)[..., border:-border, border:-border]
    return float(err.mean())


def test_translated_pair_has_the_stated_flow():
    a, b = _translated_pair(32, dx=3, dy=-2)
    # pixel (y, x) of image1 is pixel (y - 2, x + 3) of image2
    torch.testing.assert_close(a[..., 2:, :-3], b[..., :-2, 3:])


RAFT_SPEC = W.WEIGHT_FILES["raft_large_C_T_V1-22a6c225.pth"]
RAFT_DIR = _find(RAFT_SPEC, RAFT_SPEC.name)
needs_raft = pytest.mark.skipif(
    RAFT_DIR is None,
    reason=f"real RAFT weights {RAFT_SPEC.name} not found in {W.ENV_WEIGHTS_DIR}, the genloss cache or "
    f"torch.hub's cache (download: {RAFT_SPEC.url})",
)
THINGS_DIR = _find(W.WEIGHT_FILES["raft-things.pth"], "raft-things.pth")
PWC_SPEC = PWC_WEIGHTS["default"]
PWC_DIR = _find(PWC_SPEC, "pwc-default")
needs_pwc = pytest.mark.skipif(
    PWC_DIR is None,
    reason=f"real PWC-Net weights {PWC_SPEC.name} not found in {W.ENV_WEIGHTS_DIR}, the genloss cache or "
    f"torch.hub's cache (download: {PWC_SPEC.url})",
)


@needs_raft
@pytest.mark.parametrize("mode", ["native", "upsample", "pad"])
def test_raft_recovers_a_known_translation(mode):
    est = get_flow("raft", small_inputs=mode, weights_dir=RAFT_DIR)
    for size in (64, 128):
        a, b = _translated_pair(size, dx=3, dy=-2)
        with torch.no_grad():
            flow = est(a, b)
        assert _epe_interior(flow, 3, -2) < 0.5, (mode, size)


@needs_raft
@pytest.mark.skipif(THINGS_DIR is None, reason="raft-things.pth not found (see docs/flow.md)")
def test_raft_things_file_is_torchvisions_c_t_v1():
    """torchvision's C_T_V1 are the authors' raft-things weights ported: the conversion must agree."""
    ported = RAFTFlow(weights="C_T_V1", weights_dir=RAFT_DIR).net.state_dict()
    converted = RAFTFlow(weights="raft-things", weights_dir=THINGS_DIR).net.state_dict()
    for k, v in ported.items():
        torch.testing.assert_close(converted[k], v, msg=k)


@needs_pwc
def test_pwcnet_recovers_a_known_translation():
    est = get_flow("pwcnet", weights_dir=PWC_DIR)
    for size in (64, 128):
        a, b = _translated_pair(size, dx=3, dy=-2)
        with torch.no_grad():
            flow = est(a, b)
        assert _epe_interior(flow, 3, -2) < 0.5, size
