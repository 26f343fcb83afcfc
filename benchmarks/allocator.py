"""glibc malloc settings and training speed: glibc's default against `roomy_allocator()`.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/allocator.py [--repeats 3] [--threads 2]

Every (case, setting) runs in its own fresh process (malloc settings are per process and cannot be
undone), alternating, ``--repeats`` times. Each process runs warm-up steps and then times training
steps (forward, backward, Adam step) and counts the minor page faults they cause; peak RSS is the
process's. Cases: MriNet at 58×70×58, batch 8, in float32 and under bfloat16 autocast (the IXI
runs' setting), and the PIF layer of benchmarks/models.py (64 channels on 15×19×15, 5³ patches,
batch 4). The CPU's steal time over the run is printed too: on a shared virtual machine it is the
main source of noise.

    python benchmarks/allocator.py --cv-config RUN/config.yaml [--epochs 3]

The same on a whole training run: fold 0 of an existing run's configuration, ``--epochs`` epochs
at a constant rate, with ``NEUROCNN_KEEP_ALLOCATOR=1`` (glibc default) and without (roomy),
alternating; the fold's own training time from its metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "mrinet_fp32": "MriNet 58×70×58, batch 8, float32",
    "mrinet_bf16": "MriNet 58×70×58, batch 8, bf16 autocast",
    "pif": "PIF layer, 64 ch on 15×19×15, 5³ patches, batch 4",
}
MODES = {"default": "glibc default", "roomy": "roomy_allocator()"}


def child(case: str, mode: str, threads: int) -> dict[str, float]:
    import torch

    from neurocnn.models import build
    from neurocnn.models.allocator import roomy_allocator
    from neurocnn.models.pif import PIFLayer

    if mode == "roomy" and not roomy_allocator():
        raise SystemExit("roomy_allocator() not in effect (MALLOC_* set, or not glibc)")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case.startswith("mrinet"):
        net = build("mrinet", in_channels=1, num_classes=2, input_shape=(58, 70, 58))
        x = torch.randn(8, 1, 58, 70, 58)
        y = torch.randint(0, 2, (8,))
        steps, warmup = 6, 2
    else:
        net = PIFLayer(64, 6, (15, 19, 15), patch_size=5, activation=None, reassemble=False)
        x = torch.randn(4, 64, 15, 19, 15, requires_grad=True)
        y = None
        steps, warmup = 60, 10
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    bf16 = case.endswith("bf16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = torch.nn.functional.cross_entropy(out, y) if y is not None else out.sum()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times), "min_s": min(times), "faults": faults, "peak_mb": peak}


def cv_fold_seconds(config: str, epochs: int, keep: bool) -> float:
    from neurocnn.training.runfolder import fold_name

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["NEUROCNN_KEEP_ALLOCATOR"] = "1" if keep else "0"
        cmd = [sys.executable, "-m", "neurocnn.cli", "cv", "--config", config, "--fold", "0"]
        cmd += ["--epochs", str(epochs), "--schedule", "none", "--out", f"{tmp}/run", "--no-progress"]
        subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        metrics = Path(tmp, "run", "folds", fold_name(0, 0), "metrics.json")
        return float(json.loads(metrics.read_text())["seconds"])


def time_cv(args: argparse.Namespace) -> None:
    seconds: dict[bool, list[float]] = {True: [], False: []}
    before = steal()
    for _ in range(args.repeats):
        for keep in (True, False):
            seconds[keep].append(cv_fold_seconds(args.cv_config, args.epochs, keep))
    print(
        f"`neurocnn cv --config {args.cv_config} --fold 0 --epochs {args.epochs} --schedule none`, "
        f"{args.repeats} run(s) per setting, alternating; {time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"CPU steal {steal_percent(before):.1f} %.\n"
    )
    print("| malloc | fold seconds (each run) | median | speed-up |")
    print("|---|---|---:|---:|")
    base = statistics.median(seconds[True])
    for keep, label in ((True, "glibc default (NEUROCNN_KEEP_ALLOCATOR=1)"), (False, "roomy (default)")):
        each = ", ".join(f"{v:.1f}" for v in seconds[keep])
        med = statistics.median(seconds[keep])
        print(f"| {label} | {each} | {med:.1f} | {base / med:.2f}× |")


def steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields)


def steal_percent(before: tuple[int, int]) -> float:
    """Share of CPU time stolen by the hypervisor since `before` (a `steal()` snapshot)."""
    (s0, t0), (s1, t1) = before, steal()
    return 100 * (s1 - s0) / max(t1 - t0, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", help="comma-separated cases")
    p.add_argument("--cv-config", help="time `neurocnn cv` on fold 0 of this run configuration instead")
    p.add_argument("--epochs", type=int, default=3, help="with --cv-config")
    p.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads)))
        return 0
    if args.cv_config:
        time_cv(args)
        return 0
    cases = args.only.split(",") if args.only else list(CASES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NEUROCNN_KEEP"))}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    before = steal()
    started = time.time()
    for case in cases:
        for _ in range(args.repeats):
            for mode in MODES:
                cmd = [sys.executable, __file__, "--child", case, mode, "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                results.setdefault((case, mode), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    stolen = steal_percent(before)
    import torch

    print(
        f"{args.threads} thread(s), {args.repeats} fresh process(es) per setting, alternating; "
        f"median over processes of each process's median step; torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {time.time() - started:.0f} s, CPU steal "
        f"{stolen:.1f} %.\n"
    )
    print(
        "| case | malloc | step ms (median, min–max over processes) | page faults / step "
        "| peak RSS MB | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for case in cases:
        base = statistics.median(r["median_s"] for r in results[(case, "default")])
        for mode, label in MODES.items():
            rs = results[(case, mode)]
            med = [r["median_s"] * 1e3 for r in rs]
            ms = f"{statistics.median(med):.1f} ({min(med):.1f}–{max(med):.1f})"
            faults = statistics.median(r["faults"] for r in rs)
            peak = statistics.median(r["peak_mb"] for r in rs)
            up = base / statistics.median(r["median_s"] for r in rs)
            print(f"| {CASES[case]} | {label} | {ms} | {faults:,.0f} | {peak:,.0f} | {up:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
