"""Seconds per training step (batch 8, Adam; bf16 autocast unless ``--precision fp32``) of zoo models
at IXI's 3 mm shapes, in one process: what a 10-fold, 40-epoch IXI run of each would cost on this CPU
(issue 7). ``--precision bf16,fp32`` times both, model by model, interleaved; ``--layouts
channels_last,ncdhw`` times the models that take a ``channels_last`` option in both memory layouts
(channels-last is their default).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/training_step.py [--models mrinet,densenet121]
        [--precision bf16,fp32] [--layouts channels_last,ncdhw]
"""

from __future__ import annotations

import argparse
import time

import torch

from neurocnn.models import build

SHAPES = {"mrinet": (58, 70, 58)}  # the others at the 3 mm MNI grid
IXI = 127 * 40 * 10  # training subjects per fold × epochs × folds (the best MriNet recipe)


def step_seconds(
    name: str, batch: int = 8, repeats: int = 4, precision: str = "bf16", layout: str = "default"
) -> float:
    shape = SHAPES.get(name, (61, 73, 61))
    options = {} if layout == "default" else {"channels_last": layout == "channels_last"}
    net = build(name, in_channels=1, num_classes=2, input_shape=shape, **options).train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x, y = torch.randn(batch, 1, *shape), torch.randint(0, 2, (batch,))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the first step pays for allocation and kernel selection


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mrinet,densenet121")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="bf16", help="bf16, fp32, or both: bf16,fp32")
    p.add_argument("--layouts", default="default", help="default, or channels_last,ncdhw")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precisions = args.precision.split(",")
    layouts = args.layouts.split(",")
    rows = [
        (
            f"{name} ({precision}{'' if layout == 'default' else ', ' + layout})",
            step_seconds(name, precision=precision, layout=layout),
        )
        for name in args.models.split(",")
        for precision in precisions
        for layout in layouts
    ]
    reference = rows[0][1]
    print(f"| model | s / step (batch 8) | × {rows[0][0]} | IXI 10 folds × 40 epochs, h (steps only) |")
    print("|---|---:|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {s / reference:.1f} | {s / 8 * IXI / 3600:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
