"""`neurocnn cv`: cross-validated training into a run folder; `neurocnn cv gather RUN` combines folds.

Multi-process and multi-node training (Lightning DDP, torchrun, SLURM): see
`neurocnn.training.distributed`. Folds as separate jobs: a job array of ``neurocnn cv ... --fold
$((SLURM_ARRAY_TASK_ID % K)) --repeat $((SLURM_ARRAY_TASK_ID / K))``, then ``neurocnn cv gather RUN``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from neurocnn.commands._flags import check_flags
from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError

AUGMENTS = ("flip", "shift", "rotate", "zoom", "bias", "noise", "gibbs", "spike", "motion", "ghosting")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "cv",
        help="cross-validated training of a model on a prepared cohort",
        description="Train a registered model with stratified k-fold cross-validation (or "
        "train/validation/test fractions, or an independent test cohort) into a run folder: config, "
        "splits, environment, per-fold checkpoints, history, out-of-fold predictions, metrics with "
        "95% bootstrap CIs. The best checkpoint is chosen on a validation set carved from the "
        "training fold, never on the test fold. `neurocnn cv gather RUN` combines folds trained "
        "by separate jobs (--fold). DDP on one machine: --devices N --strategy ddp; for torchrun "
        "and SLURM see `python -m pydoc neurocnn.training.distributed`.",
        example="neurocnn cv cache/synth_3mm --model mrinet --folds 5 --epochs 30 --out runs/mrinet\n"
        "neurocnn cv cache/synth_3mm --model mrinet --folds 5 --permute-labels --out runs/perm\n"
        "neurocnn cv cache/synth_3mm --model mrinet --folds 5 --fold 3 --out runs/mrinet\n"
        "neurocnn cv gather runs/mrinet",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", nargs="?", help="prepared cohort folder (or `gather`)")
    p.add_argument("gather_run", nargs="?", metavar="RUN", help="with `gather`: the run folder")
    p.add_argument("--out", type=Path, help="run folder to write")
    p.add_argument("--config", type=Path, help="YAML configuration; options given here override it")
    p.add_argument("--seed", type=int, help="seed of weights, batches and splits (default 0)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="model name (`neurocnn models` lists them)")
    g.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option, e.g. batch_norm=true (repeatable; `neurocnn models` documents them)",
    )
    g.add_argument(
        "--modalities",
        choices=["auto", "branches", "channels"],
        help="several modalities: one branch each (Hu et al. 2020) or stacked as channels; auto "
        "(default): branches where the model has a multimodal version",
    )
    g = p.add_argument_group("splits")
    g.add_argument("--folds", type=int, help="k of stratified k-fold (default 10)")
    g.add_argument("--repeats", type=int, help="repetitions with different splits (default 1)")
    g.add_argument("--val", type=float, help="validation share carved from training (default 0.1)")
    g.add_argument("--holdout", help="train,val,test fractions instead of k-fold, e.g. 0.8,0.1,0.1")
    g.add_argument("--independent", action="store_true", help="train on all (test: `neurocnn evaluate`)")
    g.add_argument("--nested", type=int, help="inner folds for --search")
    g.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="e.g. optim.lr=1e-3,1e-4 (';' between values that hold commas)",
    )
    g.add_argument("--subset", type=float, help="stratified share of training subjects kept (S2: 0.2)")
    g.add_argument("--splits", type=Path, help="use this split table")
    g.add_argument("--permute-labels", action="store_true", help="shuffled labels: must give chance")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "adadelta"], help="default adam")
    g.add_argument("--lr", type=float, help="learning rate (default 1e-4 Adam/AdamW, 1e-2 SGD, 1.0 Adadelta)")
    g.add_argument("--weight-decay", type=float, help="default 0")
    g.add_argument("--momentum", type=float, help="SGD only (default 0.9)")
    g.add_argument(
        "--schedule",
        choices=["none", "plateau", "multistep", "cosine"],
        help="learning-rate schedule (default none; cosine anneals to 0 over --epochs)",
    )
    g.add_argument("--milestones", help="multi-step epochs, e.g. 5,15")
    g.add_argument("--gamma", type=float, help="multi-step factor (default 0.1)")
    g.add_argument("--plateau-patience", type=int, help="epochs without a lower validation loss (default 10)")
    g.add_argument("--epochs", type=int, help="maximum epochs (default 50)")
    g.add_argument("--batch-size", type=int, help="global batch size (default 8)")
    g.add_argument(
        "--early-stopping", type=int, help="patience in epochs on validation loss (default 10; 0: off)"
    )
    g.add_argument("--min-epochs", type=int, help="early stopping cannot stop before this epoch")
    g.add_argument(
        "--ema", type=float, help="moving average of the weights, decay per step (e.g. 0.95); default off"
    )
    g.add_argument(
        "--select",
        choices=["balanced_accuracy", "loss"],
        help="validation metric of the best checkpoint (default balanced_accuracy)",
    )
    g.add_argument(
        "--class-weights", choices=["balanced", "none"], help="loss weights by class (default balanced)"
    )
    g.add_argument(
        "--precision",
        help="32-true (default), bf16-mixed (faster only on GPUs and CPUs with native bfloat16), 16-mixed",
    )
    g.add_argument("--workers", type=int, help="data-loader worker processes")
    g = p.add_argument_group("augmentation (training set only)")
    g.add_argument("--augment", help=f"comma-separated from {', '.join(AUGMENTS)}, or none")
    g.add_argument(
        "--shift", help="translation range in voxels (default -2,3; write --shift=-1,2: it starts with '-')"
    )
    g.add_argument("--rotate", type=float, help="maximum rotation in degrees (default 10)")
    g.add_argument("--zoom", help="zoom range (default 0.9,1.1)")
    g.add_argument(
        "--augment-probability", type=float, help="chance of each MRI-like transform (default 0.5)"
    )
    g = p.add_argument_group("transfer learning")
    g.add_argument("--transfer-from", help="source run folder or checkpoint (same architecture)")
    g.add_argument("--backbone-lr-factor", type=float, help="backbone lr / head lr (default 0.001)")
    g.add_argument("--freeze-backbone", action="store_true")
    g = p.add_argument_group("tracking and hardware")
    g.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard")
    g.add_argument(
        "--mlflow", nargs="?", const="", metavar="URI", help="MLflow store (default file:RUN/mlruns)"
    )
    g.add_argument("--accelerator", help="cpu, gpu, auto")
    g.add_argument("--devices", help="number of devices/processes")
    g.add_argument("--strategy", help="auto, ddp")
    g.add_argument("--num-nodes", type=int)
    g = p.add_argument_group("run control")
    g.add_argument("--fold", help="train only these outer folds, e.g. 3 or 0,1 (job arrays)")
    g.add_argument("--repeat", help="train only these repeats")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run")
    g.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder (with --fold: those folds)"
    )
    g.add_argument("--no-progress", action="store_true")


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise NeuroCNNError(f"{what} {item!r} must look like KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _value(text: str) -> Any:
    """A command-line value: a number when it reads as one (YAML misses ``1e-3``), else YAML."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _numbers(text: str, cast: type, what: str) -> list[Any]:
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NeuroCNNError(f"{what} {text!r} must be comma-separated numbers") from None


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration sections given on the command line."""
    o: dict[str, Any] = {"model": {}, "splits": {}, "optim": {}, "train": {}, "augment": {}}
    o["transfer"], o["logging"] = {}, {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            o[section][key] = value

    if args.cache:
        o["cache"] = args.cache
    if args.seed is not None:
        o["seed"] = args.seed
    if args.permute_labels:
        o["permute_labels"] = True
    put("model", "name", args.model)
    if args.model_option:
        o["model"]["options"] = {k: _value(v) for k, v in _pairs(args.model_option, "--model-option").items()}
    put("model", "modalities", args.modalities)
    put("splits", "folds", args.folds)
    put("splits", "repeats", args.repeats)
    put("splits", "val_fraction", args.val)
    put("splits", "nested", args.nested)
    put("splits", "subset", args.subset)
    put("splits", "table", str(args.splits) if args.splits else None)
    if args.holdout:
        put("splits", "scheme", "holdout")
        put("splits", "fractions", _numbers(args.holdout, float, "--holdout"))
    if args.independent:
        put("splits", "scheme", "independent")
    if args.search:
        o["search"] = {
            k: [_value(v) for v in (vs.split(";") if ";" in vs else vs.split(","))]
            for k, vs in _pairs(args.search, "--search").items()
        }
    for key in ("optimizer", "lr", "weight_decay", "momentum", "schedule", "gamma", "plateau_patience"):
        put("optim", key, getattr(args, key))
    if args.milestones:
        put("optim", "milestones", _numbers(args.milestones, int, "--milestones"))
    put("train", "max_epochs", args.epochs)
    put("train", "batch_size", args.batch_size)
    put("train", "min_epochs", args.min_epochs)
    put("train", "ema", args.ema)
    if args.early_stopping is not None:
        o["train"]["early_stopping"] = args.early_stopping or None
    for key in ("select", "class_weights", "precision", "accelerator", "strategy", "num_nodes"):
        put("train", key, getattr(args, key))
    put("train", "num_workers", args.workers)
    if args.devices is not None:
        put("train", "devices", int(args.devices) if args.devices.isdigit() else args.devices)
    chosen_now = [a.strip() for a in (args.augment or "").split(",")]
    for flag, name in ((args.shift, "shift"), (args.rotate, "rotate"), (args.zoom, "zoom")):
        if flag is not None and name not in chosen_now:  # it would be silently ignored
            raise NeuroCNNError(f"--{name} sets the {name} augmentation's range: add {name} to --augment")
    if args.augment is not None:
        chosen = [a.strip() for a in args.augment.split(",") if a.strip() and a.strip() != "none"]
        unknown = sorted(set(chosen) - set(AUGMENTS))
        if unknown:
            raise NeuroCNNError(
                f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTS)}"
            )
        o["augment"].update(
            flip="flip" in chosen,
            shift=_numbers(args.shift or "-2,3", int, "--shift") if "shift" in chosen else None,
            rotate=(args.rotate if args.rotate is not None else 10.0) if "rotate" in chosen else 0.0,
            zoom=_numbers(args.zoom or "0.9,1.1", float, "--zoom") if "zoom" in chosen else None,
            artefacts=[a for a in chosen if a not in ("flip", "shift", "rotate", "zoom")],
        )
    put("augment", "probability", args.augment_probability)
    put("transfer", "source", args.transfer_from)
    put("transfer", "backbone_lr_factor", args.backbone_lr_factor)
    if args.freeze_backbone:
        o["transfer"]["freeze_backbone"] = True
    if args.tensorboard:
        o["logging"]["tensorboard"] = True
    if args.mlflow is not None:
        uri = args.mlflow or f"file:{(Path(args.out) / 'mlruns').resolve()}"
        o["logging"]["mlflow"] = uri
    return {k: v for k, v in o.items() if v != {}}


def build_config(args: argparse.Namespace) -> Any:
    from neurocnn.training.config import merge, parse_config
    from neurocnn.training.runfolder import CONFIG

    base: dict[str, Any] = {}
    existing = args.out / CONFIG if args.out else None
    if args.resume and existing is not None and existing.exists():
        base = yaml.safe_load(existing.read_text())
    elif args.config:
        if not args.config.exists():
            raise NeuroCNNError(f"configuration {args.config} not found")
        base = yaml.safe_load(args.config.read_text()) or {}
    given = overrides(args)
    data = merge(base, given)
    if "cache" not in data:
        raise NeuroCNNError("give the prepared cohort (CACHE) or a --config that names it")
    if "name" not in data.get("model", {}):
        raise NeuroCNNError("give a model (--model NAME); `neurocnn models` lists them")
    check_flags(data, given)
    return parse_config(data, "the configuration")


def _quiet_lightning() -> None:
    # Lightning announces hardware and tips at INFO level; the progress bars say what matters.
    # (Importing Lightning sets its level to INFO, so import it first.)
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    if args.cache == "gather":
        return gather_command(args)
    if args.gather_run:
        raise NeuroCNNError(f"unexpected argument {args.gather_run!r}")
    if args.out is None:
        raise NeuroCNNError("give the run folder to write (--out RUN)")
    _quiet_lightning()
    from neurocnn.evaluation.summary import describe
    from neurocnn.training.crossval import run_cv
    from neurocnn.training.distributed import process_rank

    config = build_config(args)
    folds = _numbers(args.fold, int, "--fold") if args.fold else None
    repeats = _numbers(args.repeat, int, "--repeat") if args.repeat else None
    try:
        result = run_cv(
            config,
            args.out,
            folds=folds,
            repeats=repeats,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"neurocnn cv: interrupted; `neurocnn cv --resume --out {args.out}` continues from the last "
            "finished epoch",
            file=sys.stderr,
        )
        return 130
    if process_rank() != 0:
        return 0
    if result.summary is not None:
        print(describe(result.summary))
        print(f"{result.run}: predictions.csv, metrics.json, summary.json")
    else:
        print(
            f"{result.run}: trained {', '.join(result.trained) or 'no fold'}"
            + (f" (kept {', '.join(result.skipped)})" if result.skipped else "")
            + "; when every fold is done run `neurocnn cv gather "
            + str(result.run)
            + "`"
        )
    if result.failed:
        for name, why in result.failed.items():
            print(f"fold {name} failed: {why} (details in folds/{name}/error.txt)", file=sys.stderr)
        print("rerun with --resume to retry the failed folds", file=sys.stderr)
        return 1
    return 0


def gather_command(args: argparse.Namespace) -> int:
    from neurocnn.evaluation.summary import describe, gather

    if not args.gather_run:
        raise NeuroCNNError("usage: neurocnn cv gather RUN")
    summary = gather(Path(args.gather_run))
    print(describe(summary))
    return 0 if not summary["missing"] else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m neurocnn.commands.cv`` (used by DDP launchers and tests)."""
    parser = argparse.ArgumentParser(prog="neurocnn cv")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NeuroCNNError as exc:
        print(f"neurocnn cv: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
