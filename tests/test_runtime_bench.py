"""The runtime benchmark runs, times peers in the same run and prints ratios."""

from __future__ import annotations

import pytest

from genloss.experiments import runtime


def test_runtime_benchmark_prints_ratios_against_peers(capsys):
    pytest.importorskip("piq")
    pytest.importorskip("pytorch_msssim")
    code = runtime.main(["--losses", "L1", "SSIM", "Watson-DCT", "--colorspaces", "RGB", "LA",
                         "--batch", "4", "--size", "32", "--repeats", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "torch.nn.L1Loss" in out and "piq.ssim" in out and "pytorch_msssim.ssim" in out
    verdicts = [line for line in out.splitlines() if line.startswith(("PASS", "MISS"))]
    assert len(verdicts) == 4  # L1, SSIM in RGB and LA
    assert all("x " in v for v in verdicts)
    # Watson's targets are for 128 x C x 64 x 64: at this size its ratio is a note, not a verdict
    notes = [line for line in out.splitlines() if line.startswith("NOTE")]
    assert [n.split(":")[0] for n in notes] == ["NOTE Watson-DCT RGB", "NOTE Watson-DCT LA"]
    assert all("x piq SSIM at 4x" in n and "(the target <= " in n and " is for 128xCx64x64)" in n for n in notes)


def test_table_and_targets_from_rows():
    rows = [{"loss": "SSIM", "colorspace": "RGB", "shape": "1x3x8x8", "times": {"ours": 1.0, "piq.ssim": 2.0},
             "memory": {}, "errors": {"lpips": "ImportError: no module"}},
            {"loss": "Watson-DFT", "colorspace": "RGB", "shape": "128x3x64x64",
             "times": {"ours": 1.0, "piq.ssim": 2.0}, "memory": {"ours": 10.0, "original": 5.0}, "errors": {}}]
    table = runtime.format_table(rows)
    assert "0.50" in table and "unavailable: ImportError" in table
    t = runtime.targets(rows)
    assert t[0].startswith("PASS SSIM RGB: 0.50x")
    assert t[1].startswith("MISS Watson-DFT RGB: 0.50x piq SSIM (target <= 0.17)")
    assert t[2].startswith("MISS Watson-DFT RGB: peak memory 10 MB vs original 5 MB")
    rows[1]["times"]["ours"] = 0.3  # 0.15x piq SSIM
    assert runtime.targets(rows)[1].startswith("PASS Watson-DFT RGB: 0.15x")
    on_gpu = runtime.targets(rows, "cuda")  # absolute: 0.5 ms per iteration
    assert on_gpu[1].startswith("MISS Watson-DFT RGB: 300.00 ms per iteration (target <= 0.5 ms")
    rows[1]["times"]["ours"] = 4e-4
    assert runtime.targets(rows, "cuda:0")[1].startswith("PASS Watson-DFT RGB: 0.40 ms")
    rows[1]["shape"] = "16x3x64x64"  # the targets are for the paper's batch: a note elsewhere, not a verdict
    assert runtime.targets(rows, "cuda:0")[1].startswith("NOTE Watson-DFT RGB: 0.40 ms per iteration at 16x3x64x64")
    rows[1]["times"]["ours"] = 1.0
    assert runtime.targets(rows)[1].startswith("NOTE Watson-DFT RGB: 0.50x piq SSIM at 16x3x64x64")


def test_paper_experiment_reconstructs_from_noise_and_reports_the_whole_run(capsys):
    """--paper: N SGD steps on sigmoid(noise) (the paper's setup), seconds per whole run, side by side."""
    import torch

    calls = []

    def l2(a, b):
        calls.append(a.detach().clone())
        return (a - b).pow(2).sum() * 1e3

    target = torch.rand(2, 3, 16, 16)
    seconds, memory = runtime.paper_experiment(l2, target, iterations=30)
    assert seconds > 0 and memory >= 0 and len(calls) == 30
    assert 0 < calls[0].min() and calls[0].max() < 1  # the paper's sigmoid of a noise parameter
    assert (calls[-1] - target).pow(2).sum() < (calls[0] - target).pow(2).sum()  # SGD reconstructs
    code = runtime.main(["--paper", "--losses", "L1", "L2", "--colorspaces", "RGB", "--batch", "2", "--size", "16",
                         "--iterations", "3", "--repeats", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3 SGD iterations" in out and "torch.nn.L1Loss" in out and "torch.nn.MSELoss" in out
    lines = [ln for ln in out.splitlines() if ln.split()[:1] in (["L1"], ["L2"])]
    assert len(lines) == 2 and all(float(ln.split()[3]) > 0 for ln in lines)
    # no in-process CPU memory figure (earlier runs mask it): blank, and the note says where to measure it
    assert all(len(ln.split()) == 5 for ln in lines)  # loss, cs, implementation, seconds, paper GPU s
    assert "MB: CUDA only" in out and "--memory" in out


def test_gpu_check_script_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu_checks.sh is run once when a GPU is lent (15 minutes in all): its plumbing is
    checked here with DEVICE=cpu QUICK=1, so that a typo cannot waste that run."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "OUT": str(tmp_path)}
    out = subprocess.run(["bash", str(root / "benchmarks" / "gpu_checks.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    verdicts = [ln for ln in summary if ln.startswith(("ok", "FAIL"))]
    assert [v.split()[-1] for v in verdicts] == ["cuda-tests", "bench-paper", "bench-iter", "bench-compile",
                                                 "ssim-scaling", "corrwise", "corrwise-compile"]
    assert all(v.startswith("ok") for v in verdicts), summary
    assert (tmp_path / "bench-paper.json").is_file() and (tmp_path / "bench-iter.json").is_file()
    compiled = json.loads((tmp_path / "bench-compile.json").read_text())
    assert compiled[0]["times"]["ours+compile"] > 0 and not compiled[0]["errors"]


def _against_revision():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "against_revision.py"
    spec = importlib.util.spec_from_file_location("against_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_against_revision_times_both_source_trees_and_compares_their_ratios(tmp_path, capsys):
    """benchmarks/against_revision.py: the revision's src/ exported and imported (not ours), ratios side by side."""
    import json
    import shutil
    import subprocess

    pytest.importorskip("piq")
    bench = _against_revision()
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(bench.ROOT), "rev-parse", "HEAD"],
                                                     capture_output=True).returncode:
        pytest.skip("needs git and a git checkout of genloss")
    src = bench.export_source("HEAD", tmp_path / "rev")
    assert (src / "genloss" / "__init__.py").is_file()
    # the child process really imports the exported tree, not the installed package
    rows = bench.run_bench(src, ["--losses", "L1", "--colorspaces", "RGB", "--repeats", "1", "--batch", "2",
                                 "--size", "16"], tmp_path / "out.json")
    assert rows[0]["loss"] == "L1" and rows[0]["times"]["ours"] > 0
    out_json = tmp_path / "table.json"
    assert bench.main(["--rev", "HEAD", "--losses", "L1", "Watson-DCT", "--rounds", "1", "--repeats", "1",
                       "--batch", "2", "--size", "16", "--json", str(out_json)]) == 0
    table = json.loads(out_json.read_text())
    assert [(e["loss"], e["colorspace"]) for e in table] == [("L1", "RGB"), ("Watson-DCT", "RGB")]
    assert all(e["base"] > 0 and e["head"] > 0 and e["change"] == pytest.approx(e["head"] / e["base"])
               for e in table)
    assert "this/HEAD" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot export"):
        bench.export_source("no-such-revision", tmp_path / "bad")


def test_against_revision_table_takes_medians_over_rounds():
    bench = _against_revision()
    rows = lambda ours, peer: [{"loss": "SSIM", "colorspace": "RGB", "times": {"ours": ours, "piq.ssim": peer,  # noqa: E731
                                                                             "pm": 2 * peer}, "memory": {}}]
    per_round = {"base": [bench.ratios(rows(1.0, 2.0)), bench.ratios(rows(3.0, 2.0)), bench.ratios(rows(1.2, 2.0))],
                 "head": [bench.ratios(rows(0.5, 2.0)), bench.ratios(rows(0.4, 2.0)), bench.ratios(rows(9.0, 2.0))]}
    (entry,) = bench.compare(per_round)
    assert entry["base"] == pytest.approx(0.6) and entry["head"] == pytest.approx(0.25)
    assert entry["change"] == pytest.approx(0.25 / 0.6) and entry["head_ms"] == pytest.approx(500.0)
    assert entry["base_range"] == (0.5, 1.5) and entry["head_range"] == (0.2, 4.5)
    table = bench.format_table([entry], "v0")
    assert "0.600 (0.500-1.500)" in table and "0.250 (0.200-4.500)" in table and "MB" not in table


def test_compile_option_times_our_compiled_losses_beside_eager_and_peers(capsys):
    """--compile: torch.compile(fullgraph=True) variants of ours as further rows, each with its verdict."""
    code = runtime.main(["--losses", "L1", "Watson-DCT", "--colorspaces", "RGB", "--batch", "2", "--size", "16",
                         "--repeats", "1", "--compile"])
    assert code == 0
    out = capsys.readouterr().out
    verdict = ("PASS", "MISS", "NOTE")
    rows = [ln.split() for ln in out.splitlines() if "ours+compile" in ln and not ln.startswith(verdict)]
    assert len(rows) == 2 and all(float(r[r.index("ours+compile") + 1]) > 0 for r in rows), out
    assert "unavailable" not in out
    verdicts = [ln.split(":")[0].split(maxsplit=1)[1] for ln in out.splitlines() if ln.startswith(verdict)]
    assert verdicts == ["L1 RGB", "L1 RGB ours+compile", "Watson-DCT RGB", "Watson-DCT RGB ours+compile"]


def test_compiled_loss_is_checked_against_the_eager_value_before_timing():
    """A compiled loss that computes another value or gradient is refused, not timed as a faster one."""
    import torch

    def drifts(a, b):  # another value only when traced: what a compiler bug would look like
        return (a - b).abs().sum() + (1.0 if torch.compiler.is_compiling() else 0.0)

    def drifts_in_gradient(a, b):  # the same value, but a gradient larger by 1 when traced
        extra = (a - a.detach()).sum() if torch.compiler.is_compiling() else 0.0
        return (a - b).abs().sum() + extra

    x, y = torch.rand(2, 1, 8, 8, requires_grad=True), torch.rand(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="torch.compile\\(mode='default'\\) gives \\d"):
        runtime._compiled(drifts, "default")(x, y)
    with pytest.raises(RuntimeError, match="gives another gradient: largest error 1 against float64 eager code"):
        runtime._compiled(drifts_in_gradient, "default")(x, y)
    good = runtime._compiled(lambda a, b: (a - b).abs().sum(), "default")
    good(x, y).backward()
    assert torch.allclose(x.grad, torch.sign(x - y).detach())


def test_compiled_check_compares_training_mode_with_the_same_random_shifts():
    """What is timed is checked: Watson in training mode (random shifts), value and gradient. Compiled code
    draws other random shifts than eager code, so without inductor's fallback_random and one seed for both
    calls this check refused every compiled Watson loss; the module stays in training mode."""
    import torch

    import genloss

    loss = genloss.get_loss("Watson-DCT", colorspace="LA", pretrained=False)
    assert loss.training
    x, y = torch.rand(2, 1, 16, 16, requires_grad=True), torch.rand(2, 1, 16, 16)
    value = runtime._compiled(loss, "default")(x, y)
    assert loss.training and torch.isfinite(value)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_table_gives_every_implementation_its_ratio_to_the_fastest_peer():
    rows = [{"loss": "SSIM", "colorspace": "RGB", "shape": "1x3x8x8", "errors": {}, "memory": {},
             "times": {"ours": 1.0, "ours+compile:reduce-overhead": 0.25, "piq.ssim": 2.0, "pm": 4.0}}]
    lines = runtime.format_table(rows).splitlines()[2:]
    # implementation, ms, ratio (the first line also has loss, colour space, shape and the paper's GPU ms)
    assert lines[0].split()[3:6] == ["ours", "1000.0", "0.50"]
    assert [ln.split() for ln in lines[1:]] == [["ours+compile:reduce-overhead", "250.0", "0.12"],
                                                ["piq.ssim", "2000.0", "1.00"], ["pm", "4000.0", "2.00"]]
    verdicts = runtime.targets(rows)
    assert verdicts[0].startswith("PASS SSIM RGB: 0.50x the fastest peer piq.ssim")
    assert verdicts[1].startswith("PASS SSIM RGB ours+compile:reduce-overhead: 0.12x the fastest peer piq.ssim")


def test_results_are_saved_after_every_case_so_a_stopped_run_keeps_them(tmp_path, monkeypatch):
    """A lent GPU's steps are time-boxed: a run stopped in its second case has saved the first."""
    import json

    calls = []
    real = runtime.time_losses

    def stopped_in_the_second_case(fns, *args, **kwargs):
        calls.append(list(fns))  # time_loss' single-implementation calls pass {"fn": ...}
        if sum(labels != ["fn"] for labels in calls) == 2:
            raise KeyboardInterrupt  # what the time limit's signal does to the run
        return real(fns, *args, **kwargs)

    monkeypatch.setattr(runtime, "time_losses", stopped_in_the_second_case)
    out = tmp_path / "rows.json"
    with pytest.raises(KeyboardInterrupt):
        runtime.main(["--losses", "L1", "L2", "--colorspaces", "RGB", "--batch", "2", "--size", "8",
                      "--repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["loss"] for r in rows] == ["L1"] and rows[0]["times"]["ours"] > 0


def test_eval_option_times_our_losses_in_eval_mode(monkeypatch):
    """--eval: no random shift (Watson's training-mode augmentation) in what is timed; default: training mode."""
    seen = []
    real = runtime.time_losses

    def record(fns, *args, **kwargs):
        seen.extend(getattr(f, "module", f).training for label, f in fns.items() if label.startswith("ours"))
        return real(fns, *args, **kwargs)

    monkeypatch.setattr(runtime, "time_losses", record)
    common = ["--losses", "Watson-DCT", "--colorspaces", "LA", "--batch", "2", "--size", "16", "--repeats", "1"]
    runtime.run(runtime.parser().parse_args(common))
    runtime.run(runtime.parser().parse_args([*common, "--eval"]))
    assert seen == [True, False]


def test_unknown_loss_is_an_error_not_an_unavailable_row(capsys):
    with pytest.raises(SystemExit) as exc:
        runtime.main(["--losses", "L1", "Nope", "--batch", "2", "--size", "8"])
    assert exc.value.code == 2
    assert "unknown loss(es) 'Nope'; registered: L1, L2" in capsys.readouterr().err
    args = runtime.parser().parse_args(["--losses", "l1", "mse", "watson-fft"])
    assert runtime._canonical_names(args.losses) == ["L1", "L2", "Watson-DFT"]  # any case, aliases


def test_a_case_without_any_timed_implementation_is_named_in_the_table():
    rows = [{"loss": "Adaptive", "colorspace": "RGB", "shape": "2x3x16x16", "times": {}, "memory": {},
             "errors": {"ours": "ValueError: needs 64 px"}}]
    assert runtime.format_table(rows).splitlines()[2].split()[:4] == ["Adaptive", "RGB", "2x3x16x16", "ours"]
    assert runtime.format_paper_table(rows, "cpu").splitlines()[2].split()[:3] == ["Adaptive", "RGB", "ours"]
