"""Runtime ratios of this checkout against an earlier revision of genloss, on this machine.

The targets of the runtime benchmark are ratios to a peer measured in the same run (for the Watson
losses: ``piq.ssim``), but a ratio still depends on the machine: the CPU, its caches and the
allocator make a whole-batch loss and piq's convolutions react differently. Whether a change kept
or lost ground is therefore best measured against the earlier code on the same machine:

    python benchmarks/against_revision.py --rev v0.1 --weights-dir ../shared/reference-weights
    python benchmarks/against_revision.py --rev HEAD~5 --losses Watson-DFT --rounds 5 --threads 2

``--rev``'s ``src/`` is exported with ``git archive`` into a temporary folder (the working tree is
not touched). Each round runs ``genloss bench`` (see genloss/experiments/runtime.py) once with the
revision's package and once with this checkout's, in alternating order, each in its own process
with the same options; every process times our loss and its peers side by side. The table gives,
per loss, the median over rounds of ``ours / fastest peer`` for both (with its range over the
rounds) and the quotient of the medians (< 1: this checkout is ahead of the revision). Times per
iteration are printed for reference only;
``--memory`` adds our peak memory of both (one subprocess per case, see ``genloss bench --memory``).
A change of a few per cent is below what separate processes resolve on a shared machine; time both
versions alternately in one process for that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export_source(rev: str, dest: Path) -> Path:
    """The ``src/`` folder of git revision ``rev`` extracted under ``dest``; returns its path."""
    try:
        data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
                              check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: cannot export src/ of revision {rev!r}: {e.stderr.decode().strip()}") from None
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_bench(src: Path, bench_args: list[str], out: Path) -> list[dict]:
    """One ``genloss bench`` process importing genloss from ``src``; its JSON rows."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    code = ("import sys, genloss; from genloss.experiments.runtime import main; "
            f"assert genloss.__file__.startswith({str(src)!r}), genloss.__file__; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *bench_args, "--json", str(out)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"error: genloss bench from {src} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def ratios(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(loss, colorspace) -> (ours / fastest peer, ours in seconds, our peak memory in MB or NaN)."""
    out = {}
    for r in rows:
        # neither ours nor a compiled variant of ours ("ours+compile...") nor the paper's code
        peers = {k: v for k, v in r["times"].items() if not k.startswith("ours") and k != "original" and v}
        if "ours" in r["times"] and peers:
            memory = r.get("memory", {}).get("ours", float("nan"))
            out[(r["loss"], r["colorspace"])] = (r["times"]["ours"] / min(peers.values()), r["times"]["ours"], memory)
    return out


def compare(per_round: dict[str, list[dict]]) -> list[dict]:
    """Median ratios over rounds of the revision (``base``) and this checkout (``head``)."""
    keys = sorted(set.intersection(*(set(r) for rounds in per_round.values() for r in rounds)))
    table = []
    for key in keys:
        entry = {"loss": key[0], "colorspace": key[1]}
        for side, rounds in per_round.items():
            entry[side] = statistics.median(r[key][0] for r in rounds)
            entry[f"{side}_range"] = (min(r[key][0] for r in rounds), max(r[key][0] for r in rounds))
            entry[f"{side}_ms"] = statistics.median(r[key][1] for r in rounds) * 1e3
            entry[f"{side}_mb"] = statistics.median(r[key][2] for r in rounds)
        entry["change"] = entry["head"] / entry["base"]
        table.append(entry)
    return table


def format_table(table: list[dict], rev: str) -> str:
    memory = any(e["base_mb"] == e["base_mb"] for e in table)  # NaN unless --memory
    def ratio(e, side):  # median and the range over rounds (how noisy the machine was)
        lo, hi = e[f"{side}_range"]
        return f"{e[side]:.3f} ({lo:.3f}-{hi:.3f})"

    lines = [f"{'loss':<18}{'cs':<4}{rev + ' ratio':>26}{'this ratio':>24}{'this/' + rev:>14}"
             f"{rev + ' ms':>14}{'this ms':>10}" + (f"{rev + ' MB':>14}{'this MB':>10}" if memory else "")]
    for e in table:
        lines.append(f"{e['loss']:<18}{e['colorspace']:<4}{ratio(e, 'base'):>26}{ratio(e, 'head'):>24}"
                     f"{e['change']:>14.2f}{e['base_ms']:>14.1f}{e['head_ms']:>10.1f}"
                     + (f"{e['base_mb']:>14.0f}{e['head_mb']:>10.0f}" if memory else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", required=True, help="git revision to compare against (tag, commit, HEAD~n)")
    p.add_argument("--losses", nargs="+", default=["Watson-DCT", "Watson-DFT", "SSIM"])
    p.add_argument("--colorspaces", nargs="+", default=["RGB"], choices=["RGB", "LA"])
    p.add_argument("--rounds", type=int, default=3, help="alternating runs per side (median)")
    p.add_argument("--repeats", type=int, default=15, help="timed iterations per loss and run")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights-dir", default=None, help="tuned weight files (both sides)")
    p.add_argument("--memory", action="store_true", help="also our peak memory (see genloss bench --memory)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the table as JSON here")
    args = p.parse_args(argv)
    bench = ["--losses", *args.losses, "--colorspaces", *args.colorspaces, "--repeats", str(args.repeats),
             "--batch", str(args.batch), "--size", str(args.size)]
    if args.threads:
        bench += ["--threads", str(args.threads)]
    if args.memory:
        bench.append("--memory")
    if args.weights_dir:
        bench += ["--weights-dir", str(Path(args.weights_dir).resolve())]
    per_round: dict[str, list[dict]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="genloss-rev-") as tmp:
        sources = {"base": export_source(args.rev, Path(tmp) / "rev"), "head": ROOT / "src"}
        for i in range(args.rounds):
            order = ("base", "head") if i % 2 == 0 else ("head", "base")
            for side in order:
                rows = run_bench(sources[side], bench, Path(tmp) / f"{side}{i}.json")
                per_round[side].append(ratios(rows))
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    table = compare(per_round)
    print(f"ours / fastest peer, median of {args.rounds} alternating runs per side "
          f"(batch {args.batch}, {args.size} px, {args.repeats} iterations per run)")
    print(format_table(table, args.rev))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
