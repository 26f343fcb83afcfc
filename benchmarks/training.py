"""Training-engine benchmarks on synthetic cohorts (issue 4).

1. ``loading``: is data loading the bottleneck? The time of a training epoch run by Lightning from the
   memory-mapped cache (augmentation off, validation off) against the pure compute time of the same
   batches already in memory (forward, loss, backward, optimiser step in a plain loop). Target: at
   most 1.15×. Interleaved repeats, medians.
2. ``cv``: MriNet, stratified 5-fold CV on a 200-subject synthetic cohort with a planted grey-matter
   effect; the same with ``--permute-labels`` (its 95% CI must include 0.5).
3. ``transfer``: MriNet trained on a 600-subject cohort with a related effect, moved to a 60-subject
   target (new head, backbone at 0.001× the head's learning rate, and frozen), against training the
   target from scratch; 5 repeats of 5-fold CV.

Each part writes ``benchmarks/_work/training/<part>.json``; ``render`` (run after every part) writes
``benchmarks/results/training.md`` from whatever parts exist.

    .venv/bin/python benchmarks/training.py loading
    .venv/bin/python benchmarks/training.py cv --voxel-size 3
    .venv/bin/python benchmarks/training.py transfer --voxel-size 6
    .venv/bin/python benchmarks/training.py all          # the three, then render
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from training_report import MAIN_REGIONS, WORK, render  # benchmarks/training_report.py

ROOT = Path(__file__).resolve().parents[1]


def quiet() -> None:
    import lightning.pytorch  # noqa: F401  (sets its logger to INFO on import)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def synthetic_cache(name: str, spec: Any) -> Path:
    """Generate (once) and prepare (reused when current) a synthetic cohort; return its cache."""
    from neurocnn.data.cohort import read_cohort
    from neurocnn.data.prepare import prepare_cohort
    from neurocnn.data.preprocess import PrepareParams
    from neurocnn.data.synthetic import make_cohort

    raw = WORK / "cohorts" / name
    if not (raw / "participants.tsv").exists():
        make_cohort(spec, raw, overwrite=True)
    cohort = read_cohort(raw / "participants.tsv", images=["gm"], label="label")
    cache = WORK / "caches" / name
    cache.parent.mkdir(parents=True, exist_ok=True)
    prepare_cohort(cohort, cache, PrepareParams(), jobs=2, progress=False)
    return cache


def gm_spec(n: int, voxel: float, regions: list[str], size: float, seed: int) -> Any:
    from neurocnn.data.synthetic import Effect, SynthSpec

    effect = Effect(kind="atlas", name="gm_reduction", atlas="aal2", regions=regions, size=size)
    return SynthSpec(n_subjects=n, voxel_size=voxel, modalities=("gm",), effects=[effect], seed=seed)


def save(part: str, data: dict[str, Any]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    data = {**data, "date": datetime.date.today().isoformat(), "host": machine()}
    (WORK / f"{part}.json").write_text(json.dumps(data, indent=1))
    render()


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, load {load:.1f}"


# --- 1. loading -------------------------------------------------------------------------------------


def loading(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from neurocnn.data.cache import open_cache
    from neurocnn.training import parse_config
    from neurocnn.training.fold import FoldData, FoldPlan
    from neurocnn.training.module import Classifier, build_network

    quiet()
    cache_path = synthetic_cache(
        f"main_{args.voxel_size:g}mm", gm_spec(200, args.voxel_size, MAIN_REGIONS, 0.1, 0)
    )
    cache = open_cache(cache_path)
    n = args.subjects
    idx = np.arange(n)
    plan = FoldPlan(0, 0, idx, idx[:0], idx[:0])
    config = parse_config(
        {
            "cache": str(cache_path),
            "model": {"name": "mrinet"},
            "optim": {"lr": 3e-4},
            "train": {"batch_size": 8, "early_stopping": None, "num_workers": args.workers},
        }
    )

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.start = (time.perf_counter(), time.process_time())

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            self.times.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1]))

    def lightning_epoch() -> tuple[float, float]:
        L.seed_everything(0, verbose=False)
        net = build_network(config, cache.shape, 2)
        module = Classifier(net, config, weights=None, seed=0)
        timer = EpochTimer()
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            deterministic=True,
            callbacks=[timer],
        )
        trainer.fit(module, datamodule=FoldData(cache, plan, config, 0))
        return timer.times[-1]  # the second epoch: the page cache and allocator are warm

    def compute_epoch() -> tuple[float, float]:
        L.seed_everything(0, verbose=False)
        net = build_network(config, cache.shape, 2)
        module = Classifier(net, config, weights=None, seed=0)
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-4)
        data = torch.from_numpy(np.array(cache.array()[idx], dtype=np.float32))
        labels = torch.from_numpy(cache.labels()[idx])
        batches = [(data[i : i + 8], labels[i : i + 8]) for i in range(0, n, 8)]
        times = []
        for _ in range(2):
            start = (time.perf_counter(), time.process_time())
            for x, y in batches:
                optimizer.zero_grad()
                loss = module.loss(net(x), y)
                loss.backward()
                optimizer.step()
            times.append((time.perf_counter() - start[0], time.process_time() - start[1]))
        return times[-1]

    rows = []
    for repeat in range(args.loading_repeats):
        (a, a_cpu), (b, b_cpu) = lightning_epoch(), compute_epoch()
        rows.append(
            {
                "repeat": repeat,
                "lightning_s": a,
                "compute_s": b,
                "ratio": a / b,
                "lightning_cpu_s": a_cpu,
                "compute_cpu_s": b_cpu,
                "cpu_ratio": a_cpu / b_cpu,
            }
        )
        print(f"repeat {repeat}: wall {a:.2f}/{b:.2f} = {a / b:.3f}; CPU {a_cpu:.2f}/{b_cpu:.2f}", flush=True)
    save(
        "loading",
        {
            "voxel_size": args.voxel_size,
            "shape": list(cache.shape[1:]),
            "subjects": n,
            "batch": 8,
            "workers": args.workers,
            "torch_threads": torch.get_num_threads(),
            "rows": rows,
            "median_ratio": statistics.median(r["ratio"] for r in rows),
            "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows),
            "command": " ".join(sys.argv),
        },
    )


# --- 2. cross-validation ------------------------------------------------------------------------------


def train_args(epochs: int) -> dict[str, Any]:
    """MriNet as in S3 (Adam 3e-4, LR ×0.1 at two milestones), shortened for a 2-core CPU."""
    return {
        "optim": {
            "optimizer": "adam",
            "lr": 3e-4,
            "schedule": "multistep",
            "milestones": [epochs // 2, epochs - 2],
        },
        "train": {"max_epochs": epochs, "batch_size": 8, "early_stopping": 6, "select": "balanced_accuracy"},
    }


def run_cv_part(
    cache: Path, out: Path, epochs: int, repeats: list[int] | None = None, **extra: Any
) -> dict[str, Any]:
    """Train (or continue) a run, then summarise its finished folds."""
    from neurocnn.evaluation.summary import gather
    from neurocnn.training import parse_config, run_cv
    from neurocnn.training.config import merge

    data = merge({"cache": str(cache), "model": {"name": "mrinet"}, **train_args(epochs)}, extra)
    config = parse_config(data)
    start = time.perf_counter()
    result = run_cv(config, out, repeats=repeats, resume=out.exists(), progress=False)
    seconds = time.perf_counter() - start
    if result.failed:
        raise SystemExit(f"{out}: folds failed: {result.failed}")
    s = result.summary or gather(out, seed=config.seed)
    return {
        "run": str(out),
        "seconds": seconds,
        "folds_done": s["folds_done"],
        "folds_expected": s["folds_expected"],
        "pooled": s.get("pooled"),
        "mean_std": {
            k: s["mean_std"].get(k) for k in ("balanced_accuracy", "auc", "best_epoch", "epochs_run")
        },
        "per_repeat": s.get("per_repeat"),
        "repeat_mean_std": s.get("repeat_mean_std"),
        "folds": len(s["per_fold"]),
    }


def cv(args: argparse.Namespace) -> None:
    quiet()
    v = args.voxel_size
    cache = synthetic_cache(f"main_{v:g}mm", gm_spec(200, v, MAIN_REGIONS, 0.1, 0))
    runs = WORK / "runs"
    real = run_cv_part(cache, runs / f"mrinet_{v:g}mm", args.epochs, splits={"folds": 5})
    print("true labels:", real["pooled"]["balanced_accuracy"], flush=True)
    save("cv", {"voxel_size": v, "epochs": args.epochs, "true": real, "command": " ".join(sys.argv)})
    perm = run_cv_part(
        cache, runs / f"mrinet_{v:g}mm_perm", args.epochs, splits={"folds": 5}, permute_labels=True
    )
    print("permuted labels:", perm["pooled"]["balanced_accuracy"], flush=True)
    save(
        "cv",
        {
            "voxel_size": v,
            "epochs": args.epochs,
            "true": real,
            "permuted": perm,
            "command": " ".join(sys.argv),
        },
    )


# --- 3. transfer learning -----------------------------------------------------------------------------


def transfer(args: argparse.Namespace) -> None:
    quiet()
    v = args.voxel_size
    # related effects: the source's regions overlap the target's (two shared, one different each)
    source = synthetic_cache(
        f"source_{v:g}mm", gm_spec(600, v, ["Hippocampus_L", "Insula_R", "Cingulate_Ant_L"], 0.1, 11)
    )
    target = synthetic_cache(
        f"target_{v:g}mm", gm_spec(60, v, ["Hippocampus_L", "Insula_R", "Amygdala_L"], 0.1, 12)
    )
    runs = WORK / "runs"
    start = time.perf_counter()
    src = run_cv_part(
        source, runs / f"source_{v:g}mm", args.epochs, splits={"scheme": "independent", "val_fraction": 0.1}
    )
    print("source trained", flush=True)
    splits = {"folds": 5, "repeats": args.repeats}
    results: dict[str, Any] = {"source": {"seconds": time.perf_counter() - start, "run": src["run"]}}
    conditions = {
        "scratch": {},
        # S4's recipe: Adam at 0.01 for the new head, the backbone at 0.001× that
        "fine_tune": {
            "optim": {"lr": 1e-2},
            "transfer": {"source": str(runs / f"source_{v:g}mm"), "backbone_lr_factor": 0.001},
        },
    }
    if args.scratch_high_lr:  # the control for the fine-tuning learning rate
        conditions["scratch_lr_0.01"] = {"optim": {"lr": 1e-2}}
    if args.frozen:
        conditions["frozen_backbone"] = {
            "optim": {"lr": 1e-2},
            "transfer": {"source": str(runs / f"source_{v:g}mm"), "freeze_backbone": True},
        }
    seconds: dict[str, float] = dict.fromkeys(conditions, 0.0)
    # one repeat of every condition at a time, so that a long run has comparable partial results
    for repeat in range(args.repeats):
        for name, extra in conditions.items():
            part = run_cv_part(
                target, runs / f"target_{v:g}mm_{name}", args.epochs, [repeat], splits=splits, **extra
            )
            seconds[name] += part["seconds"]
            results[name] = {**part, "seconds": seconds[name], "repeats_done": repeat + 1}
            print(name, repeat, results[name]["pooled"]["balanced_accuracy"], flush=True)
            save(
                "transfer",
                {
                    "voxel_size": v,
                    "epochs": args.epochs,
                    "repeats": args.repeats,
                    **results,
                    "command": " ".join(sys.argv),
                },
            )


# --- rendering --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["loading", "cv", "transfer", "all", "render"])
    parser.add_argument("--voxel-size", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5, help="transfer: CV repeats on the target")
    parser.add_argument("--subjects", type=int, default=48, help="loading: training subjects")
    parser.add_argument("--frozen", action="store_true", help="transfer: also a frozen backbone")
    parser.add_argument(
        "--scratch-high-lr", action="store_true", help="transfer: also scratch at the fine-tuning lr (0.01)"
    )
    parser.add_argument("--loading-repeats", type=int, default=5, help="loading: interleaved repeats")
    parser.add_argument("--workers", type=int, default=0, help="loading: data-loader workers")
    args = parser.parse_args()
    if args.part in ("loading", "all"):
        loading(args)
    if args.part in ("cv", "all"):
        cv(args)
    if args.part in ("transfer", "all"):
        transfer(args)
    render()


if __name__ == "__main__":
    main()
