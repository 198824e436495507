"""The contract every registered loss meets, parametrized over ``list_losses()``.

A loss added to the registry (built-in or a user's, like ``Tiny-Abs`` registered below from
``tests/_tiny_loss.py``) is picked up here without further code. Losses are built offline:
``pretrained=False`` (random/initial parameters), random ImageNet backbones, and an explicit
``image_size`` where the class takes one.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from _tiny_loss import TinyAbsLoss

import genloss
from genloss import list_losses, loss_info, register_loss

# -- a user loss, registered as a user would; the suite below must check it like the built-ins ----------
if "Tiny-Abs" not in list_losses():
    register_loss("Tiny-Abs", TinyAbsLoss, description="Test fixture: mean absolute difference.", family="test")

LOSSES = list_losses()
N = 2


def _offline_options(name: str, size: int | None = None) -> dict:
    opts = loss_info(name).options()
    kw: dict = {}
    if "pretrained" in opts:
        kw["pretrained"] = False
    if "pretrained_backbone" in opts:
        kw["pretrained_backbone"] = False
    if "image_size" in opts and size is not None:
        kw["image_size"] = (3, size, size)
    return kw


def image_size(name: str) -> int:
    """A small image size the loss accepts (its minimum, at least 32 px)."""
    cls = loss_info(name).cls
    min_size = getattr(cls, "min_size", None)
    try:
        probe = loss_info(name).build(**_offline_options(name, 32))
        min_size = probe.min_size
    except (TypeError, ValueError):
        pass
    if isinstance(min_size, tuple):
        min_size = max(min_size)
    return max(32, int(min_size or 0))


def build(name: str, **kw) -> torch.nn.Module:
    """The loss, offline; seeded so that random parts (e.g. a random ImageNet backbone) agree between builds."""
    size = image_size(name)
    torch.manual_seed(0)
    return loss_info(name).build(**{**_offline_options(name, size), **kw})


def pair(name: str, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image batch in [0, 1] and a noisy copy (still in [0, 1])."""
    size = image_size(name)
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(N, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    y = (x + 0.08 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


@pytest.fixture(params=LOSSES)
def name(request) -> str:
    return request.param


# ------------------------------------------------------------------------------------------------------
# API: explicit signatures, docstrings, strict options, registry
# ------------------------------------------------------------------------------------------------------


def test_user_registered_loss_is_in_the_suite():
    assert "Tiny-Abs" in LOSSES
    assert isinstance(genloss.get_loss("tiny-abs", gain=2.0), TinyAbsLoss)


def test_signature_is_explicit_and_docstring_complete(name):
    cls = loss_info(name).cls
    params = inspect.signature(cls).parameters.values()
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params), f"{cls.__name__} takes *args/**kwargs"
    assert all(p.annotation is not inspect.Parameter.empty for p in params), f"{cls.__name__}: untyped parameter"
    assert "value_range" in inspect.signature(cls).parameters
    doc = inspect.getdoc(cls) or ""
    for section in ("Args:", "Shape:", "Returns:", "Raises:", "References:", "Example:"):
        assert section in doc, f"{cls.__name__} docstring lacks {section}"


def test_docstring_example_runs(name):
    """The Example of each class runs offline and prints what it says."""
    import doctest

    cls = loss_info(name).cls
    module = sys.modules[cls.__module__]
    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, module=module,
                                                      extraglobs={"torch": torch, "genloss": genloss})
    assert tests and tests[0].examples, f"{cls.__name__} has no doctest example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"{cls.__name__}: {runner.failures} failing example(s)"


def test_unknown_option_raises_naming_it_and_the_valid_ones(name):
    with pytest.raises(TypeError, match=r"'reductoin'.*did you mean 'reduction'.*valid options: .*value_range"):
        loss_info(name).build(reductoin="sum", **_offline_options(name, image_size(name)))


def test_flags_refuse_truthy_strings(name):
    """'False' from argparse/JSON/env would be truthy: every bool option refuses anything but True/False."""
    flags = [n for n, p in inspect.signature(loss_info(name).cls).parameters.items() if p.annotation in ("bool", bool)]
    for flag in flags:
        if flag in loss_info(name).preset:
            continue
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'False'"):
            loss_info(name).build(**{**_offline_options(name, image_size(name)), flag: "False"})


def _numeric_options(name: str) -> dict[str, str]:
    """The loss' options annotated int or float (possibly | None) that its registry entry leaves open."""
    kinds = {"int": "int", "int | None": "int", "float": "float", "float | None": "float"}
    params = inspect.signature(loss_info(name).cls).parameters
    return {n: kinds[p.annotation] for n, p in params.items()
            if p.annotation in kinds and n not in loss_info(name).preset}


def test_numeric_options_refuse_strings_bools_and_nan_naming_the_option(name):
    """'0.1' from a config or command line, True (an int to Python) and NaN (which passes every `< 0` check)
    are refused by every int/float option with an error that names it, before the class' own checks."""
    base = _offline_options(name, image_size(name))
    for option, kind in _numeric_options(name).items():
        with pytest.raises(TypeError, match=f"{option} must be an? (integer|number)( or None)?, got '1'"):
            loss_info(name).build(**{**base, option: "1"})
        with pytest.raises(TypeError, match=f"{option} must be an? (integer|number)( or None)?, got True"):
            loss_info(name).build(**{**base, option: True})
        if kind == "float":
            with pytest.raises(ValueError, match=f"{option} must be a finite number, got nan"):
                loss_info(name).build(**{**base, option: float("nan")})
        else:
            with pytest.raises(TypeError, match=f"{option} must be an integer( or None)?, got 2.0"):
                loss_info(name).build(**{**base, option: 2.0})


@pytest.mark.parametrize("bad", ["01", b"01", (False, True), {0: 1, 1: 2}, (0,), 1.0, (0, 1, 2)])
def test_value_range_refuses_what_is_not_a_pair_of_numbers(name, bad):
    """A string or bytes iterate as characters ('05' would read as (0, 5)), bools and mapping keys count as
    numbers to Python: all are refused, naming the option."""
    with pytest.raises(TypeError, match="value_range must be a pair"):
        loss_info(name).build(**{**_offline_options(name, image_size(name)), "value_range": bad})


def test_numpy_numbers_are_accepted_as_plain_numbers(name):
    import numpy as np

    base = _offline_options(name, image_size(name))
    for given in (np.array([0.0, 255.0], dtype=np.float32), torch.tensor([0.0, 255.0]), (np.int64(0), 255)):
        loss = loss_info(name).build(**{**base, "value_range": given})
        assert loss.value_range == (0.0, 255.0) and all(type(v) is float for v in loss.value_range)


def test_a_module_cast_to_16_bit_is_refused_and_float_restores_it(name):
    """.half() of the loss, or of a model that holds it, rounds its tuned parameters (and a backbone's): the
    loss computes 16-bit images in float32 anyway, so the only effect was a silently different value
    (Adaptive: 451.57 -> 451.88 in bfloat16). Every loss with parameters refuses to compute with them."""
    loss = build(name).eval()
    x, y = pair(name)
    want = loss(x, y)
    model = torch.nn.Sequential(loss).to(torch.bfloat16)  # the loss inside a model cast as a whole
    if not any(p.is_floating_point() for p in loss.parameters()):
        torch.testing.assert_close(model[0](x, y), want)  # nothing to round
        return
    with pytest.raises(TypeError, match=r"parameters are torch.bfloat16 .*loss.float\(\)"):
        model[0](x, y)
    with pytest.raises(TypeError, match=r"parameters are torch.float16"):
        build(name).eval().half()(x, y)
    restored = build(name).eval().double().float()  # casts that round nothing are fine
    torch.testing.assert_close(restored(x, y), want)
    # 16-bit parameters that no cast of the module made: loaded with assign=True, or swapped in for a call
    halves = {k: v.half() if v.is_floating_point() else v for k, v in restored.state_dict().items()}
    assigned = build(name).eval()
    assigned.load_state_dict(halves, assign=True, strict=False)
    if any(p.dtype == torch.float16 for p in assigned.parameters()):
        with pytest.raises(TypeError, match="parameters are torch.float16"):
            assigned(x, y)
    params = {k: v.half() for k, v in restored.named_parameters()}
    with pytest.raises(TypeError, match="parameters are torch.float16"):
        torch.func.functional_call(restored, params, (x, y))


def test_forward_on_meta_tensors_gives_the_shape_without_reading_values(name):
    """Meta tensors (shape inference, tracing) carry no values: the value check and the autocast guard
    must not try to read or query them."""
    loss = build(name, reduction="none").eval().to("meta")
    x, y = pair(name)
    assert loss(x.to("meta"), y.to("meta")).shape == (N,)


def test_deferred_initialisation_gives_the_same_value_or_refuses(name):
    """Built under torch.device('meta'), then to_empty() and load_state_dict(): a loss whose every tensor
    outside the state dict is restored (Watson's constants come from CPU masters) gives the value of the
    loss it was loaded from; any other refuses to compute (uninitialised constants), never a number."""
    ref = build(name).eval()
    with torch.device("meta"):
        try:
            lazy = build(name)
        except (RuntimeError, NotImplementedError):  # building itself on meta may fail loudly
            return
    x, y = pair(name)
    assert lazy(x.to("meta"), y.to("meta")).is_meta  # built in the context: its constants are on meta too
    lazy = lazy.to_empty(device="cpu")
    lazy.load_state_dict(ref.state_dict())
    lazy.eval()
    if getattr(lazy, "_meta_constants", ()):
        with pytest.raises(RuntimeError, match="built on the meta device"):
            lazy(x, y)
    else:
        torch.testing.assert_close(lazy(x, y), ref(x, y))


TWINS = {"L1": "l1", "L2": "l2", "SSIM": "ssim", "MS-SSIM": "ms_ssim", "Watson-DCT": "watson_dct",
         "Watson-DFT": "watson_dft", "Watson-VGG": "watson_vgg", "Adaptive": "adaptive",
         "Deeploss-VGG": "deep_loss", "Deeploss-Squeeze": "deep_loss"}


def _twin_and_class(name):
    """The loss' functional twin, the keyword arguments that make it the offline class instance, and that
    instance in eval mode."""
    info = loss_info(name)
    if info.family == "test":
        pytest.skip("user fixture has no functional twin")
    import genloss.functional as F

    twin = getattr(F, TWINS[name])
    kw = {**info.preset, **_offline_options(name, image_size(name))}
    if "backbone_weights" in info.options():
        # the twin must use the same (random) backbone: pass the module's weights explicitly
        loss = build(name).eval()
        kw.pop("pretrained_backbone", None)
        # FeatureSlices keeps each layer's index in torchvision's ``features``: slices.<s>.<i>.* -> features.<i>.*
        kw["backbone_weights"] = {"features." + k.split(".", 2)[2]: v for k, v in loss.backbone.state_dict().items()}
    loss = info.build(**{k: v for k, v in kw.items() if k not in info.preset}).eval()
    sig = inspect.signature(twin).parameters
    return twin, {k: v for k, v in kw.items() if k in sig}, loss


def test_functional_twin_gives_the_class_value(name):
    twin, call_kw, loss = _twin_and_class(name)
    x, y = pair(name)
    torch.testing.assert_close(twin(x, y, **call_kw), loss(x, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first", ["inference_mode", "torch.func.grad", "meta device context"])
def test_functional_twin_works_whatever_the_context_of_its_first_call(name, first):
    """The twin caches the instance its first call builds: a first call under inference mode (e.g. a
    validation pass before training) or inside a torch.func transform must not build an instance that
    fails later calls (its parameters were inference tensors, or construction failed on wrapped tensors)."""
    from genloss.functional import _twin

    twin, call_kw, loss = _twin_and_class(name)
    x, y = pair(name, dtype=torch.float64)
    loss = loss.double()
    _twin.clear_cache()
    if first == "inference_mode":
        with torch.inference_mode():
            torch.testing.assert_close(twin(x, y, **call_kw), loss(x, y).detach())
    elif first == "torch.func.grad":
        g = torch.func.grad(lambda a: twin(a, y, **call_kw).sum())(x)
        xr = x.clone().requires_grad_(True)
        loss(xr, y).sum().backward()
        torch.testing.assert_close(g, xr.grad)
    else:
        with torch.device("meta"):
            assert twin(x.to("meta"), y.to("meta"), **call_kw).is_meta
    xr = x.clone().requires_grad_(True)
    twin(xr, y, **call_kw).sum().backward()  # a later plain call with gradients, on the cached instance
    xl = x.clone().requires_grad_(True)
    loss(xl, y).sum().backward()
    torch.testing.assert_close(xr.grad, xl.grad)


def test_functional_twin_takes_list_options_as_configs_give_them():
    """A config's value_range is a list: the twin keys its cache on a typed copy (lists as tuples), never on
    the unhashable list itself (which raised "unhashable type: 'list'")."""
    from genloss.functional import _twin, l1, ssim

    x = torch.rand(1, 3, 16, 16)
    _twin.clear_cache()
    torch.testing.assert_close(ssim(x, x.flip(-1), value_range=[0, 1]), ssim(x, x.flip(-1), value_range=(0, 1)))
    torch.testing.assert_close(l1(x * 2 - 1, x, value_range=[-1, 1]), genloss.L1Loss(value_range=(-1, 1))(x * 2 - 1, x))


def test_functional_twin_first_call_in_an_atexit_handler_and_ctrl_c_during_a_build():
    """Real processes: a first call at interpreter shutdown (no new threads) builds in place; Ctrl-C during a
    slow build (a backbone download, say; here a build made slow) stops the caller at once instead of
    waiting for the build thread."""
    import signal
    import time

    code = ("import atexit, torch\nfrom genloss.functional import l1\n"
            "atexit.register(lambda: print('at exit', float(l1(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "at exit 192.0" in out.stdout, out.stderr[-1000:]
    slow = ("import time, torch\nfrom genloss.functional import _twin, l1\nbuild = _twin._build\n"
            "_twin._build = lambda *a: (time.sleep(60), build(*a))[1]\nprint('building', flush=True)\n"
            "l1(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))\n")
    proc = subprocess.Popen([sys.executable, "-c", slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "building"
    time.sleep(1.0)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 10, "the caller waited for the build thread"
    assert "KeyboardInterrupt" in err and proc.returncode != 0


def test_functional_twin_cache_tells_option_types_apart():
    """11, 11.0 and True are equal as dict keys: a value the class refuses must be refused by the twin also
    after an accepted value of another type built and cached an instance."""
    from genloss.functional import _twin, ssim

    x = torch.rand(1, 3, 16, 16)
    _twin.clear_cache()
    ssim(x, x, window=11)
    with pytest.raises(TypeError, match="window must be an integer, got 11.0"):
        ssim(x, x, window=11.0)
    assert _twin._typed((0, 1.0)) != _twin._typed((0.0, 1.0))


def test_only_the_requested_loss_module_is_imported():
    code = (
        "import sys, genloss; assert 'torchvision' not in sys.modules; genloss.list_losses(); "
        "genloss.get_loss('L1'); "
        "bad = [m for m in sys.modules if m.startswith(('torchvision', 'genloss.losses.watson', 'genloss.losses.deep', "
        "'genloss.losses.ssim', 'genloss.losses.adaptive', 'genloss.corrwise', 'scipy'))]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------------


def test_reductions_agree(name):
    x, y = pair(name)
    per = build(name, reduction="none").eval()(x, y)
    assert per.shape == (N,)
    torch.testing.assert_close(build(name, reduction="sum").eval()(x, y), per.sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(build(name, reduction="mean").eval()(x, y), per.mean(), rtol=1e-5, atol=1e-5)


def test_identical_inputs_give_the_minimum_with_a_finite_gradient(name):
    loss = build(name, reduction="none").eval()
    x, y = pair(name)
    same = loss(x, x)
    assert torch.all(same <= loss(x, y) + 1e-6), (same, loss(x, y))
    xg = x.clone().requires_grad_(True)
    loss(xg, x).sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_eval_mode_is_deterministic(name):
    opts = loss_info(name).options()
    kw = {"deterministic": False} if "deterministic" in opts else {}
    loss = build(name, **kw).eval()
    x, y = pair(name)
    assert torch.equal(loss(x, y), loss(x, y))


def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    a = build(name).eval()
    saved = a.state_dict()  # (frozen ImageNet backbones are not part of a loss' state)
    with torch.no_grad():
        for key, p in a.named_parameters():
            if key in saved:
                p.add_(0.01 * torch.randn_like(p))
    b = build(name).eval()
    b.load_state_dict(a.state_dict())
    x, y = pair(name)
    torch.testing.assert_close(a(x, y), b(x, y))


def test_float64_gradcheck(name):
    loss = build(name).eval().double()
    x, y = pair(name, torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), fast_mode=True, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_dtypes_follow_the_rule(name):
    loss = build(name).eval()
    x, y = pair(name)
    assert loss.double()(x.double(), y.double()).dtype == torch.float64
    loss = build(name).eval()
    assert loss(x.half(), y.half()).dtype == torch.float32
    assert loss(x.bfloat16(), y.bfloat16()).dtype == torch.float32


def test_value_range_is_checked_and_mapped(name):
    x, y = pair(name)
    ref = build(name).eval()(x, y)
    with pytest.raises(ValueError, match=r"outside the expected range \[0, 1\].*value_range"):
        build(name).eval()(x * 255, y * 255)
    for lo, hi in ((0.0, 255.0), (-1.0, 1.0)):
        got = build(name, value_range=(lo, hi)).eval()(x * (hi - lo) + lo, y * (hi - lo) + lo)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_nan_and_degenerate_sizes_are_refused(name):
    loss = build(name).eval()
    x, y = pair(name)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(bad, y)
    with pytest.raises(ValueError, match="zero height or width"):
        loss(x[..., :0], y[..., :0])
    min_size = loss.min_size
    if isinstance(min_size, tuple):
        min_size = max(min_size)
    if min_size and min_size > 1:
        s = min_size - 1
        with pytest.raises(ValueError, match="smaller than the minimum"):
            loss(x[..., :s, :s], y[..., :s, :s])


# ------------------------------------------------------------------------------------------------------
# transforms: torch.func and torch.compile
# ------------------------------------------------------------------------------------------------------


def _frozen(name: str) -> torch.nn.Module:
    loss = build(name).eval()
    for p in loss.parameters():
        p.requires_grad_(False)
    return loss


def test_torch_func_grad_matches_backward(name):
    # float64: the transforms take plain autograd while .backward() may take a hand-written kernel;
    # the two agree to rounding, which float32 amplifies in Watson-DFT's phase term
    loss = _frozen(name).double()
    x, y = pair(name, torch.float64)
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    g = torch.func.grad(lambda a: loss(a, y))(x)
    torch.testing.assert_close(g, xg.grad, rtol=1e-4, atol=1e-6)


def test_torch_func_vmap_matches_a_loop(name):
    loss = _frozen(name)
    x, y = pair(name)
    xs, ys = torch.stack([x, y]), torch.stack([y, x])
    got = torch.func.vmap(loss)(xs, ys)
    want = torch.stack([loss(a, b) for a, b in zip(xs, ys, strict=True)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_torch_func_vmap_over_the_target_only(name):
    """vmap over targets with one plain prediction that needs a gradient (the case a hand-written
    backward takes outside transforms): the target is the wrapped tensor, so the plain path must run."""
    loss = _frozen(name)
    x, y = pair(name)
    xg = x.clone().requires_grad_(True)
    ys = torch.stack([y, y.flip(-1)])
    got = torch.func.vmap(lambda t: loss(xg, t))(ys)
    want = torch.stack([loss(xg, t) for t in ys])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_gradients_match_a_loop(name):
    """autograd.grad(..., is_grads_batched=True) (vectorised Jacobians, gradcheck's batched check) runs a
    backward under vmap: an in-place product with the batched incoming gradient failed in SSIM's."""
    loss = build(name, reduction="none").eval().requires_grad_(False)
    x, y = pair(name)
    xg = x.clone().requires_grad_(True)
    value = loss(xg, y)
    (batched,) = torch.autograd.grad(value, xg, grad_outputs=torch.eye(N), is_grads_batched=True, retain_graph=True)
    rows = [torch.autograd.grad(value[i], xg, retain_graph=True)[0] for i in range(N)]
    torch.testing.assert_close(batched, torch.stack(rows), rtol=1e-4, atol=1e-6)
    # a scalar loss ('sum', where L1/L2 have their own backward) with a batch of cotangents
    total = build(name).eval().requires_grad_(False)(xg, y)
    (batched,) = torch.autograd.grad(total, xg, grad_outputs=torch.tensor([1.0, -2.0]), is_grads_batched=True,
                                     retain_graph=True)
    (single,) = torch.autograd.grad(total, xg)
    torch.testing.assert_close(batched, torch.stack([single, -2 * single]), rtol=1e-4, atol=1e-6)


def test_forward_mode_ad_of_an_input_that_needs_a_gradient(name):
    """A dual tensor (forward-mode AD) that also needs a gradient: the hand-written backwards have no jvp,
    so such input takes the plain path; the tangent equals the gradient's directional derivative."""
    import torch.autograd.forward_ad as fwAD

    loss = _frozen(name).double()
    x, y = pair(name, torch.float64)
    v = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(loss(fwAD.make_dual(x.clone().requires_grad_(True), v), y)).tangent
    torch.testing.assert_close(tangent, (xg.grad * v).sum(), rtol=1e-4, atol=1e-8)


@pytest.mark.slow
def test_torch_compile_fullgraph_gives_the_eager_value(name):
    torch._dynamo.reset()
    loss = _frozen(name)
    x, y = pair(name)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, y), loss(x, y), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_every_registered_loss_compiles_in_one_process_in_both_modes():
    """torch.compile keeps at most 8 graphs per code object: when every loss ran ImageLoss.forward the
    ninth loss compiled in a process failed under fullgraph=True (or silently ran eager without it)."""
    torch._dynamo.reset()
    compiled = 0
    for name in LOSSES:
        loss = _frozen(name)
        x, y = pair(name)
        fn = torch.compile(loss, fullgraph=True, backend="eager")
        for training in (False, True):  # Watson's training mode adds its random shift: another graph
            loss.train(training)
            if training and loss_info(name).family == "watson":
                torch.manual_seed(0)
                want = loss(x, y)
                torch.manual_seed(0)  # the eager backend draws the same random shift as eager code
            else:
                want = loss(x, y)
            torch.testing.assert_close(fn(x, y), want, rtol=1e-5, atol=1e-5)
            compiled += 1
    assert compiled > torch._dynamo.config.recompile_limit


@pytest.mark.slow
def test_torch_compile_dynamic_shapes_gives_the_eager_value(name):
    """dynamic=True traces sizes and float options symbolically (Python math or a format spec on them
    broke tracing elsewhere): the batch and the image size change without a new graph's errors."""
    torch._dynamo.reset()
    loss = _frozen(name)
    x, y = pair(name)
    compiled = torch.compile(loss, fullgraph=True, dynamic=True, backend="aot_eager")
    crops: list[tuple[torch.Tensor, ...]] = [(x, y), (x[:1], y[:1])]
    if loss_info(name).family != "adaptive":  # Adaptive's parameters are built for one image size
        h, w = x.shape[-2:]  # larger, not smaller: the pair has the loss' minimum size
        larger = (h + 3, w + 2)
        crops.append(tuple(torch.nn.functional.interpolate(t[1:], size=larger, mode="bilinear") for t in (x, y)))
    for a, b in crops:
        torch.testing.assert_close(compiled(a, b), loss(a, b), rtol=1e-5, atol=1e-5)


_DYNAMIC_SHAPES_CHECK = """
import sys, torch, genloss
torch._inductor.config.fallback_random = True  # compiled code draws the eager random shifts: values comparable
loss = genloss.get_loss(sys.argv[1], pretrained=False).train()
compiled = torch.compile(loss, dynamic=True)
for b, s in ((3, 32), (2, 30), (3, 17)):  # batch and sizes change, also to sizes that are not multiples of 8
    g = torch.Generator().manual_seed(s)
    x, y = torch.rand(b, 3, s, s, generator=g).requires_grad_(), torch.rand(b, 3, s, s, generator=g)
    torch.manual_seed(0)
    got = compiled(x, y)
    (got_grad,) = torch.autograd.grad(got, x)
    torch.manual_seed(0)
    want = loss(x, y)
    (want_grad,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6 * float(want_grad.abs().max()))
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["Watson-DCT", "Watson-DFT"])
def test_watson_training_mode_compiles_with_dynamic_shapes(loss_name):
    """torch.compile(dynamic=True) (and automatic dynamic shapes, after a second image size) in training
    mode: the block padding was written as (-h) % 8, whose sympy Mod kept inductor's index simplification
    busy for over 10 minutes (Watson-DFT). A subprocess with a time limit makes a hang a failure."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _DYNAMIC_SHAPES_CHECK, loss_name], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_cuda_matches_cpu_without_host_synchronisation(name, frozen):
    """No host synchronisation in forward and backward, on the plain autograd path and on the frozen
    metric's hand-written one (Watson's single Functions, which run on a GPU without pieces)."""
    loss = _frozen(name) if frozen else build(name).eval()
    x, y = pair(name)
    want = loss(x, y)
    cuda = loss.cuda()
    xc, yc = x.cuda(), y.cuda()
    for _ in range(10):  # past the readable first-call checks
        cuda(xc, yc)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = cuda(xc, yc)
        xg = xc.clone().requires_grad_(True)
        cuda(xg, yc).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_cuda_graph_captures_forward_and_backward(name, frozen):
    """A whole loss, forward and backward, is captured in one CUDA graph and replays new data exactly
    as eager calls compute it (possible because nothing reads tensor data on the host), trainable or
    frozen (the hand-written Functions)."""
    from conftest import cuda_graph_replay

    loss = (_frozen(name) if frozen else build(name).eval()).cuda()
    x, y = pair(name)
    pairs = [(x.cuda(), y.cuda()), (y.cuda(), x.cuda())]
    for (value, grad), (a, b) in zip(cuda_graph_replay(loss, pairs), pairs, strict=True):
        a = a.clone().requires_grad_(True)
        want = loss(a, b)
        want.backward()
        torch.testing.assert_close(value, want.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, a.grad, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# the flow registry: the same contract for every estimator (learned ones with random weights, offline)
# ------------------------------------------------------------------------------------------------------
from genloss.corrwise.flow.base import flow_info, get_flow, list_flows  # noqa: E402


def _flow(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    if "weights" in inspect.signature(flow_info(name).cls).parameters:
        kw.setdefault("weights", None)  # random weights: no download
    return get_flow(name, **kw).eval()


def _moved_pair(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.rand(2, 3, size // 8, size // 8, generator=g)
    big = torch.nn.functional.interpolate(base, size=(size + 8, size + 8), mode="bicubic", align_corners=False)
    big = big.clamp(0, 1)
    # image1[y] = image2[y - 1]: pixel p of image1 is at p + (0, -1) in image2 (the flow convention)
    return big[..., 4 : 4 + size, 4 : 4 + size], big[..., 5 : 5 + size, 4 : 4 + size]


@pytest.fixture(params=list_flows())
def flow_name(request) -> str:
    return request.param


def test_flow_options_are_strict_and_signatures_explicit(flow_name):
    cls = flow_info(flow_name).cls
    params = inspect.signature(cls).parameters.values()
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params)
    with pytest.raises(TypeError, match=r"'iteratoins'.*valid options"):
        get_flow(flow_name, iteratoins=3)


def test_flow_flags_refuse_truthy_strings_and_estimators_pickle(flow_name):
    import copy
    import pickle

    cls = flow_info(flow_name).cls
    for flag, p in inspect.signature(cls).parameters.items():
        if p.annotation in ("bool", bool) and flag not in flow_info(flow_name).preset:
            with pytest.raises(TypeError, match=f"{flag} must be True or False"):
                get_flow(flow_name, **{flag: "False"})
    est = _flow(flow_name)
    a, b = _moved_pair()
    with torch.no_grad():
        want = est(a, b)
        for clone in (copy.deepcopy(est), pickle.loads(pickle.dumps(est))):  # EMA copies, spawn, torch.save
            torch.testing.assert_close(clone(a, b), want)


def test_flow_shape_dtype_and_finiteness(flow_name):
    a, b = _moved_pair()
    with torch.no_grad():
        flow = _flow(flow_name)(a, b)
    assert flow.shape == (2, 2, 64, 64) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_flow_refuses_images_of_another_range(flow_name):
    a, b = _moved_pair()
    with pytest.raises(ValueError, match="outside the expected range|\\[0, 255\\]"), torch.no_grad():
        _flow(flow_name)(a * 255, b * 255)


def test_classical_flows_find_the_motion_and_zero_for_identical_images(flow_name):
    if flow_name not in ("coarse2fine", "dis", "farneback"):
        pytest.skip("learned estimators have random weights offline")
    a, b = _moved_pair()
    est = _flow(flow_name)
    with torch.no_grad():
        same = est(a, a)
        moved = est(a, b)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert same[inner].abs().mean() < 0.05
    assert (moved[:, 1][inner[:1] + inner[2:]] + 1).abs().mean() < 0.3  # 1 px up
    assert moved[:, 0][inner[:1] + inner[2:]].abs().mean() < 0.3
