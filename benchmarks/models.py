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
  15×19×15 with 5³ patches (3×4×3 = 36 patches, 6 filters of 3³), batch 4, forward + backward.

`--quick` shrinks inputs and repeats (a smoke run of the script, not numbers to quote).
"""

from __future__ import annotations

import argparse
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

SLICE_CHUNK = 16


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


def worker_throughput(name: str, shape: list[int], steps: int) -> dict[str, Any]:
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
        times = _train_steps(net, x, y, steps + 1)[1:]
        per_volume = min(times) * n_slices / SLICE_CHUNK
    else:
        x = torch.randn(1, 1, *shape)
        y = torch.tensor([1])
        times = _train_steps(model, x, y, steps + 1)[1:]
        per_volume = min(times)
    return {
        "name": name,
        "params": models.count_parameters(model),
        "seconds_per_volume": per_volume,
        "peak_rss_mb": _peak_rss_mb(),
    }


def worker_memory(memory_efficient: bool, shape: list[int]) -> dict[str, Any]:
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
            shape = [max(n // 3, m) for n, m in zip(shape, need, strict=True)]
            if name == "channel_dimension":
                shape[2] = info.default_input_shape[2]
        result = _run_worker("throughput", name=name, shape=shape, steps=1 if quick else 2)
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
    lines = [
        f"DenseNet-121, one training step at 1×{'×'.join(map(str, shape))}, batch 1.",
        "",
        "| allocator | memory_efficient | peak RSS MB | RSS before step MB | step s | peak cut |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, env in (
        ("glibc default", None),
        ("MALLOC_MMAP_THRESHOLD_=262144", {"MALLOC_MMAP_THRESHOLD_": "262144"}),
    ):
        plain = _run_worker("memory", env=env, memory_efficient=False, shape=shape)
        lean = _run_worker("memory", env=env, memory_efficient=True, shape=shape)
        for flag, res in (("no", plain), ("yes", lean)):
            cut = 1 - res["peak_rss_mb"] / plain["peak_rss_mb"]
            lines.append(
                f"| {label} | {flag} | {res['peak_rss_mb']:.0f} | {res['before_mb']:.0f} | "
                f"{res['seconds']:.1f} | {'' if flag == 'no' else f'{cut:.0%}'} |"
            )
            print(lines[-1], flush=True)
    return lines


def section_pif(quick: bool) -> list[str]:
    from neurocnn.models.pif import PIFLayer

    torch.manual_seed(0)
    batch, repeats = (2, 3) if quick else (4, 15)
    shape, patch = (15, 19, 15), 5
    layer = PIFLayer(64, 6, shape, patch_size=patch, kernel_size=3, activation=None)
    x = torch.randn(batch, 64, *shape, requires_grad=True)
    # The reference: one Conv3d per patch position, applied in a Python loop.
    convs = torch.nn.ModuleList(torch.nn.Conv3d(64, 6, 3) for _ in range(layer.num_patches))
    grid = layer.grid

    def looped() -> None:
        xp = F.pad(x, (0, grid[2] * patch - shape[2], 0, grid[1] * patch - shape[1]))
        outs = []
        n = 0
        for i in range(grid[0]):
            for j in range(grid[1]):
                for k in range(grid[2]):
                    sl = (
                        slice(None),
                        slice(None),
                        *(slice(g * patch, (g + 1) * patch) for g in (i, j, k)),
                    )
                    outs.append(convs[n](xp[sl]))
                    n += 1
        torch.stack(outs, 1).sum().backward()

    def batched() -> None:
        layer(x).sum().backward()

    res = _timed_alternating({"batched": batched, "loop": looped}, repeats)
    speed_min = res["loop"][0] / res["batched"][0]
    speed_med = res["loop"][1] / res["batched"][1]
    return [
        f"64 channels on {'×'.join(map(str, shape))}, {patch}³ patches ({layer.num_patches}), "
        f"6 filters of 3³, batch {batch}, forward + backward, {repeats} alternating repeats.",
        "",
        "| implementation | min ms | median ms |",
        "|---|---:|---:|",
        f"| batched (grouped convolution) | {res['batched'][0] * 1e3:.1f} | {res['batched'][1] * 1e3:.1f} |",
        f"| per-patch loop | {res['loop'][0] * 1e3:.1f} | {res['loop'][1] * 1e3:.1f} |",
        f"| speed-up | {speed_min:.1f}× | {speed_med:.1f}× |",
    ]


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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        fn = worker_throughput if kind == "throughput" else worker_memory
        print(json.dumps(fn(**job)))
        return 0
    out = [
        f"Command: `python benchmarks/models.py{' --quick' if args.quick else ''}"
        f"{'' if args.only == ','.join(SECTIONS) else ' --only ' + args.only}`  ",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs (shared with other jobs)",
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
