"""Speed and memory benchmarks of the model zoo (CPU).

    python benchmarks/models.py [--quick] [--only throughput,densenet,memory,pif] [--output FILE]

Sections:

- throughput: one training step (forward, backward, SGD step) of every model at its paper's input
  shape, batch 1, each model in a fresh process (so its peak RSS is its own). 2D slice models are
  timed on a batch of 16 slices and reported per volume (volumes/s = slices/s ÷ slices per volume),
  which is the same arithmetic as a whole volume without holding 121 slices' activations at once.
- densenet: our DenseNet-121 against MONAI's DenseNet121 at 1×96×114×96, batch 2, same process,
  alternating steps (the machine is shared: min and median over the repeats are reported).
  Ours is built with MONAI's stem (stride 2 on every axis) so both do the same arithmetic.
- memory: peak RSS of one DenseNet-121 training step at 1×121×145×121 with and without
  ``memory_efficient``, each in a fresh process; once with glibc's default allocator settings and
  once with ``MALLOC_MMAP_THRESHOLD_=262144``, under which freed activations go back to the system,
  so that RSS follows the live tensors instead of the allocator's retained heap.
- pif: the batched PIF layer against a Python loop of per-patch convolutions, 64 channels on
  15×19×15 with 5³ patches (3×4×3 = 36 patches, 6 filters of 3³), batch 4, forward + backward;
  the layer as shipped (compiled CPU kernels, ``impl="auto"``) and its grouped-convolution path
  (``impl="conv"``, what runs on a GPU), all four alternating in one process.

`--quick` shrinks inputs and repeats (a smoke run of the script, not numbers to quote).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from neurocnn import models
from neurocnn.models.allocator import roomy_allocator

SLICE_CHUNK = 16
THREADS = [1]  # set from --threads; a list so that the sections see the parsed value


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- workers (run in a fresh process) -----------------------------------------------------------


def _train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def worker_throughput(name: str, shape: list[int], steps: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    info = models.info(name)
    model = models.build(name, input_shape=tuple(shape))
    if info.family == "slices2d" and name != "channel_dimension":
        axis = model.slice_axis
        n_slices = shape[axis]
        slice_shape = [n for i, n in enumerate(shape) if i != axis]
        net = model.net
        x = torch.randn(SLICE_CHUNK, 1, *slice_shape)
        y = torch.randint(0, 2, (SLICE_CHUNK,))
        per_volume = _min_step(net, x, y, steps) * n_slices / SLICE_CHUNK
    else:
        x = torch.randn(1, 1, *shape)
        y = torch.tensor([1])
        per_volume = _min_step(model, x, y, steps)
    return {
        "name": name,
        "params": models.count_parameters(model),
        "seconds_per_volume": per_volume,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _min_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Fastest of `steps` training steps after a warm-up one (one step when the warm-up is slow)."""
    warm = _train_steps(model, x, y, 1)[0]
    return min(_train_steps(model, x, y, 1 if warm > 20 else steps))


def worker_memory(memory_efficient: bool, shape: list[int], threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.build("densenet121", input_shape=tuple(shape), memory_efficient=memory_efficient)
    x = torch.randn(1, 1, *shape)
    y = torch.tensor([1])
    before = _peak_rss_mb()
    times = _train_steps(model, x, y, 1)
    return {"peak_rss_mb": _peak_rss_mb(), "before_mb": before, "seconds": times[0]}


def _run_worker(kind: str, env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    payload = json.dumps({"kind": kind, **kwargs})
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", payload],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- sections ------------------------------------------------------------------------------------


def _timed_alternating(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, float]]:
    for fn in fns.values():
        fn()  # warm-up: oneDNN primitive caches, allocations
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def section_throughput(quick: bool) -> list[str]:
    lines = [
        "| model | family | input | parameters | s / volume | volumes / s | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name in models.available():
        info = models.info(name)
        shape = list(info.default_input_shape)
        if quick:
            with torch.device("meta"):
                need = models.build(name).min_input_shape
            if name != "channel_dimension":  # its 2D network sees the whole 121×145 image
                shape = [max(n // 3, m) for n, m in zip(shape, need, strict=True)]
        result = _run_worker(
            "throughput", name=name, shape=shape, steps=1 if quick else 2, threads=THREADS[0]
        )
        dims = "x".join(map(str, shape))
        if "error" in result:
            lines.append(f"| {name} | {info.family} | {dims} | - | failed: {result['error']} | | |")
            continue
        spv = result["seconds_per_volume"]
        lines.append(
            f"| {name} | {info.family} | {dims} | {result['params']:,} | {spv:.2f} | "
            f"{1 / spv:.3f} | {result['peak_rss_mb']:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def section_densenet(quick: bool) -> list[str]:
    from monai.networks.nets import DenseNet121

    shape = (48, 57, 48) if quick else (96, 114, 96)
    repeats = 2 if quick else 7
    torch.manual_seed(0)
    x = torch.randn(2, 1, *shape)
    y = torch.tensor([0, 1])
    variants = {
        "MONAI DenseNet121 (as shipped)": DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
        "MONAI DenseNet121, channels-last": DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(
            memory_format=torch.channels_last_3d
        ),
        "ours, channels-last (default)": models.build("densenet121", input_shape=shape, stem_stride=2),
        "ours, channels_last=False": models.build(
            "densenet121", input_shape=shape, stem_stride=2, channels_last=False
        ),
    }
    inputs = {
        k: x.to(memory_format=torch.channels_last_3d) if "MONAI" in k and "last" in k else x for k in variants
    }

    def step(key: str) -> Callable[[], None]:
        model, inp = variants[key], inputs[key]

        def run() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(inp), y).backward()

        return run

    counts = {k: models.count_parameters(m) for k, m in variants.items()}
    results = _timed_alternating({k: step(k) for k in variants}, repeats)
    base_min, base_med = results["MONAI DenseNet121 (as shipped)"]
    lines = [
        f"Input 2×1×{'×'.join(map(str, shape))}, forward + backward, {repeats} alternating repeats.",
        "",
        "| variant | parameters | min s/step | median s/step | speed-up vs MONAI (min / median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, (mn, med) in results.items():
        lines.append(
            f"| {key} | {counts[key]:,} | {mn:.2f} | {med:.2f} | "
            f"{base_min / mn:.2f}× / {base_med / med:.2f}× |"
        )
    return lines


def section_memory(quick: bool) -> list[str]:
    shape = [61, 73, 61] if quick else [121, 145, 121]
    repeats = 1 if quick else 3
    lines = [
        f"DenseNet-121, one training step at 1×{'×'.join(map(str, shape))}, batch 1; each "
        f"configuration in {repeats} fresh process(es), alternating: median (min–max).",
        "",
        "| allocator | memory_efficient | peak RSS MB | RSS before step MB | step s | peak cut (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def span(values: list[float], fmt: str) -> str:
        med = f"{statistics.median(values):{fmt}}"
        return med if len(values) == 1 else f"{med} ({min(values):{fmt}}–{max(values):{fmt}})"

    for label, env in (
        ("as shipped: glibc default; checkpointing sets M_MMAP_THRESHOLD", None),
        ("glibc default for both (NEUROCNN_KEEP_ALLOCATOR=1)", {"NEUROCNN_KEEP_ALLOCATOR": "1"}),
        ("MALLOC_MMAP_THRESHOLD_=262144 for both", {"MALLOC_MMAP_THRESHOLD_": "262144"}),
    ):
        kw = {"shape": shape, "threads": THREADS[0]}
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(repeats):
            for flag in (False, True):
                runs[flag].append(_run_worker("memory", env=env, memory_efficient=flag, **kw))
        plain_peak = statistics.median(r["peak_rss_mb"] for r in runs[False])
        for flag in (False, True):
            res = runs[flag]
            peak = [r["peak_rss_mb"] for r in res]
            cut = 1 - statistics.median(peak) / plain_peak
            lines.append(
                f"| {label} | {'yes' if flag else 'no'} | {span(peak, '.0f')} | "
                f"{span([r['before_mb'] for r in res], '.0f')} | "
                f"{span([r['seconds'] for r in res], '.1f')} | "
                f"{f'{cut:.0%}' if flag else ''} |"
            )
            print(lines[-1], flush=True)
    return lines


def section_pif(quick: bool) -> list[str]:
    from neurocnn.models.pif import PIFLayer

    torch.manual_seed(0)
    batch, repeats = (2, 3) if quick else (4, 15)
    shape, patch = (15, 19, 15), 5
    layer = PIFLayer(64, 6, shape, patch_size=patch, activation=None, reassemble=False)
    grouped = PIFLayer(64, 6, shape, patch_size=patch, activation=None, reassemble=False, impl="conv")
    grouped.load_state_dict(layer.state_dict())
    x = torch.randn(batch, 64, *shape, requires_grad=True)
    # The references: one Conv3d per patch position, applied in a Python loop.
    convs = torch.nn.ModuleList(torch.nn.Conv3d(64, 6, 3) for _ in range(layer.num_patches))
    grid = layer.grid
    pad = (0, grid[2] * patch - shape[2], 0, grid[1] * patch - shape[1], 0, grid[0] * patch - shape[0])

    def lean_loop() -> None:
        # patches as views of the padded batch, one convolution call per patch
        xp = F.pad(x, pad)
        outs = []
        for n, (i, j, k) in enumerate(itertools.product(*(range(g) for g in grid))):
            window = (slice(None), slice(None), *(slice(g * patch, (g + 1) * patch) for g in (i, j, k)))
            outs.append(convs[n](xp[window]))
        torch.stack(outs, 1).sum().backward()

    def samplewise_loop() -> None:
        # the structure of the authors' layer: channels-last, every sample split into patches with
        # torch.split along each axis and stacked, then one convolution call per patch
        xp = F.pad(x, pad).permute(0, 2, 3, 4, 1)
        per_sample = []
        for sample in xp:
            pieces = [sample]
            for axis in range(3):
                pieces = [q for piece in pieces for q in torch.split(piece, patch, dim=axis)]
            per_sample.append(torch.stack(pieces))
        patches = torch.stack(per_sample)  # (B, P, p, p, p, C)
        outs = [convs[n](patches[:, n].permute(0, 4, 1, 2, 3)) for n in range(layer.num_patches)]
        torch.cat([o.unsqueeze(1) for o in outs], 1).sum().backward()

    def batched() -> None:
        layer(x).sum().backward()

    def batched_conv() -> None:
        grouped(x).sum().backward()

    fns = {"batched": batched, "conv": batched_conv, "lean": lean_loop, "samplewise": samplewise_loop}
    lines = [
        f"64 channels on {'×'.join(map(str, shape))}, {patch}³ patches ({layer.num_patches}), "
        f"6 filters of 3³ per patch, batch {batch}, forward + backward, {repeats} alternating "
        "repeats, min / median ms.",
        "",
        "| threads | PIF layer (compiled kernels) | its grouped-conv path | loop over patches (views) | "
        "speed-up | loop, sample-wise split (authors' structure) | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    before = torch.get_num_threads()
    best: dict[str, tuple[float, int]] = {}  # fastest min time of each variant over thread counts
    for threads in sorted({THREADS[0], 2}):
        torch.set_num_threads(threads)
        r = _timed_alternating(fns, repeats)
        for k, (mn, _) in r.items():
            if k not in best or mn < best[k][0]:
                best[k] = (mn, threads)
        ms = {k: f"{v[0] * 1e3:.1f} / {v[1] * 1e3:.1f}" for k, v in r.items()}
        up = {
            k: f"{r[k][0] / r['batched'][0]:.1f}× / {r[k][1] / r['batched'][1]:.1f}×"
            for k in ("lean", "samplewise")
        }
        lines.append(
            f"| {threads} | {ms['batched']} | {ms['conv']} | {ms['lean']} | {up['lean']} | "
            f"{ms['samplewise']} | {up['samplewise']} |"
        )
    torch.set_num_threads(before)

    # A loop of small calls can run slower with more threads (OpenMP start-up per call), which
    # flatters the same-thread ratio: compare each variant at its own best thread count too.
    def at(key: str) -> str:
        ms, t = best[key]
        return f"{ms * 1e3:.1f} ms ({t} thread{'s' if t > 1 else ''})"

    b_ms = best["batched"][0]
    text = f"Each variant at its fastest thread count (min): PIF layer {at('batched')}"
    for k, label in (
        ("conv", "its grouped-conv path"),
        ("lean", "loop over patches (views)"),
        ("samplewise", "sample-wise loop"),
    ):
        text += f"; {label} {at(k)}, {best[k][0] / b_ms:.1f}× the PIF layer's time"
    lines += ["", text + "."]
    return lines


SECTIONS = {
    "pif": ("Batched PIF layer vs per-patch loop", section_pif),
    "densenet": ("DenseNet-121: ours vs MONAI", section_densenet),
    "memory": ("DenseNet-121 memory-efficient option", section_memory),
    "throughput": ("Training throughput at the paper's input shape", section_throughput),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few repeats")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--output", default=None, help="also write the markdown to this file")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch CPU threads (default 1: on the shared 2-core machine two OpenMP threads "
        "spin against other jobs and ran 2-3× slower)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    THREADS[0] = args.threads
    torch.set_num_threads(args.threads)
    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        if kind == "throughput":
            roomy_allocator()  # as in training; the memory workers set their own allocator
        fn = worker_throughput if kind == "throughput" else worker_memory
        print(json.dumps(fn(**job)))
        return 0
    # As in training (fit_fold): freed tensors stay in glibc's heap (benchmarks/allocator.py).
    malloc = "roomy (as in training)" if roomy_allocator() else "as the environment sets it"
    out = [
        f"Command: `python benchmarks/models.py{' --quick' if args.quick else ''}"
        f"{'' if args.threads == 1 else f' --threads {args.threads}'}"
        f"{'' if args.only == ','.join(SECTIONS) else ' --only ' + args.only}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; torch {torch.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs, glibc malloc {malloc}",
        "",
    ]
    for key in args.only.split(","):
        title, fn = SECTIONS[key]
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        body = fn(args.quick)
        out += [f"### {title}", "", *body, "", f"({time.perf_counter() - t0:.0f} s)", ""]
        print("\n".join(body), flush=True)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
