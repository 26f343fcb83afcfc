"""`neurocnn baseline KIND`: classical baselines with nested cross-validation into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError

EXAMPLE = (
    "neurocnn baseline svm cache/ixi_3mm --splits runs/mrinet --out runs/svm\n"
    "neurocnn baseline lbp --splits runs/mrinet --atlas aal --out runs/lbp\n"
    "neurocnn baseline regional cache/ixi_3mm --splits runs/mrinet \\\n"
    "    --table ../shared/data/ixi/regional_volumes.csv --out runs/regional\n"
    "neurocnn baseline regional cache/ixi_3mm --atlas harvard_oxford --models lr,xgb --out runs/ho\n"
    "neurocnn baseline deep2d cache/ixi_3mm --weights vgg19_imagenet.pt --out runs/deep2d"
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "baseline",
        help="classical baselines (voxel SVM, LBP, regional features, 2D deep features)",
        description="Train a scikit-learn baseline with nested cross-validation: hyper-parameters are "
        "chosen by GridSearchCV inside each training fold only, then the pipeline predicts the test "
        "fold. With --splits RUN the folds are those of that (CNN) run, so that `neurocnn compare` "
        "pairs the results fold by fold. Writes a run folder like a CNN run's.",
        example=EXAMPLE,
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    svm = _kind(
        kinds,
        "svm",
        "SVM-RBF on flattened voxels (S3)",
        "SVM with an RBF kernel on the standardised voxels of the prepared cohort, inside a "
        "brain mask; C and the kernel width by inner grid search.",
        "neurocnn baseline svm cache/ixi_3mm --splits runs/mrinet --out runs/svm",
    )
    svm.add_argument(
        "--mask",
        default="auto",
        help="`auto` (voxels non-zero in most training subjects), `none`, or a NIfTI brain mask",
    )
    svm.add_argument("--mask-fraction", type=float, default=0.5, help="with --mask auto (default 0.5)")

    lbp = _kind(
        kinds,
        "lbp",
        "local binary patterns + SVM-RBF (S4)",
        "Local binary patterns per slice (scikit-image; S4: 8 neighbours, radius 1), code "
        "histograms per subject (or per atlas region), then SVM-RBF.",
        "neurocnn baseline lbp cache/ixi_3mm --atlas aal --out runs/lbp",
    )
    lbp.add_argument("--points", type=int, default=8, help="neighbours (default 8)")
    lbp.add_argument("--radius", type=float, default=1, help="radius in voxels (default 1)")
    lbp.add_argument("--method", default="uniform", help="uniform (default), nri_uniform, default, ror")
    lbp.add_argument("--axis", type=int, default=2, help="slice axis of the (X, Y, Z) grid (default 2)")
    _atlas_args(lbp, "histograms per region of this atlas")

    reg = _kind(
        kinds,
        "regional",
        "regional features → LR, KNN, XGBoost, SVM (S3, S1)",
        "Regional features from a table (--table) or mean values per atlas region (--atlas, "
        "nilearn's label masker on the prepared grid) → logistic regression, KNN, XGBoost "
        "and SVM, each tuned by grid search (`select`: the choice among them inside each "
        "training fold). Feature importances (coefficients, XGBoost gains) are saved and "
        "plotted. Several models: one run folder each under --out.",
        "neurocnn baseline regional cache/ixi_3mm --table ../shared/data/ixi/regional_volumes.csv "
        "\\\n    --names ../shared/data/ixi/muse_labels.csv --out runs/regional",
    )
    reg.add_argument("--table", type=Path, help="CSV/TSV of regional measures, one row per participant")
    reg.add_argument("--id-column", default="participant_id", help="participant column of --table")
    reg.add_argument("--columns", help="comma-separated feature columns (default: every numeric one)")
    reg.add_argument("--names", type=Path, help="label table (index,name) naming the table's columns")
    _atlas_args(reg, "mean value per region of this atlas")
    reg.add_argument("--models", default="lr,knn,xgb,svm", help="comma-separated: lr, knn, xgb, svm, select")

    deep = _kind(
        kinds,
        "deep2d",
        "pre-trained 2D CNN features → SVM-RBF (S1)",
        "Deep features of a pre-trained 2D CNN, slice by slice, pooled per subject "
        "(neurocnn.models.features2d), then SVM-RBF. Needs the network's weights file.",
        "neurocnn baseline deep2d cache/ixi_3mm --weights vgg19.pt --out runs/deep2d",
    )
    deep.add_argument("--weights", type=Path, required=True, help="state dict of the 2D network")
    deep.add_argument("--backbone", default="vgg19", help="2D network (default vgg19)")
    deep.add_argument("--axis", type=int, default=2, help="slice axis (default 2)")
    deep.add_argument("--pool", default="mean", help="mean, max or meanmax over slices")


def _kind(kinds: Any, name: str, help: str, description: str, example: str) -> argparse.ArgumentParser:
    p = add_command(kinds, name, help=help, description=description, example=example)
    p.add_argument("cache", nargs="?", type=Path, help="prepared cohort (default: that of --splits RUN)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--modalities", help="comma-separated modalities to use (default all)")
    g = p.add_argument_group("cross-validation")
    g.add_argument("--splits", type=Path, help="a run folder (its splits.tsv) or a split table")
    g.add_argument("--folds", type=int, default=10, help="k without --splits (default 10)")
    g.add_argument("--repeats", type=int, default=1, help="repeats without --splits")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--inner", type=int, default=5, help="inner folds of the grid search (default 5)")
    g.add_argument("--scoring", default="balanced_accuracy", help="balanced_accuracy, roc_auc, accuracy")
    g.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="e.g. C=1,10 or gamma=0.3,1"
    )
    g.add_argument("--jobs", type=int, default=1, help="parallel grid-search processes")
    g.add_argument("--threads", type=int, default=1, help="BLAS threads per process (default 1)")
    g.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    g = p.add_argument_group("run control")
    g.add_argument("--no-models", action="store_true", help="do not keep the fitted fold models")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--quiet", action="store_true", help="no line per fold")
    p.set_defaults(func=run)
    return p


def _atlas_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--atlas", help=f"{what}: a bundled atlas name (aal, harvard_oxford…) or a NIfTI")
    p.add_argument("--labels", type=Path, help="label table of a NIfTI --atlas")


def _list(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    from neurocnn.baselines import runs

    options = runs.CVOptions(
        splits=args.splits,
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        inner_folds=args.inner,
        scoring=args.scoring,
        grid=tuple(args.grid),
        n_jobs=args.jobs,
        threads=args.threads,
        resume=args.resume,
        overwrite=args.overwrite,
        save_models=not args.no_models,
        n_boot=args.bootstrap,
        progress=not args.quiet,
    )
    modalities = _list(args.modalities)
    if args.kind == "svm":
        mask = args.mask if args.mask in ("auto", "none") else Path(args.mask)
        summaries = {
            "svm": runs.run_svm(
                args.cache,
                args.out,
                options,
                mask=mask,
                mask_fraction=args.mask_fraction,
                modalities=modalities,
            )
        }
    elif args.kind == "lbp":
        summaries = {
            "lbp": runs.run_lbp(
                args.cache,
                args.out,
                options,
                points=args.points,
                radius=args.radius,
                method=args.method,
                axis=args.axis,
                atlas=args.atlas,
                labels=args.labels,
                modalities=modalities,
            )
        }
    elif args.kind == "regional":
        models = _list(args.models) or []
        summaries = runs.run_regional(
            args.cache,
            args.out,
            options,
            models=models,
            table=args.table,
            id_column=args.id_column,
            columns=_list(args.columns),
            names=args.names,
            atlas=args.atlas,
            labels=args.labels,
            modalities=modalities,
        )
    elif args.kind == "deep2d":
        summaries = {
            "deep2d": runs.run_deep2d(
                args.cache,
                args.out,
                options,
                weights=args.weights,
                backbone=args.backbone,
                axis=args.axis,
                pool=args.pool,
                modalities=modalities,
            )
        }
    else:  # argparse refuses other kinds
        raise NeuroCNNError(f"unknown baseline {args.kind!r}")
    for summary in summaries.values():
        print(describe(summary))
    return 0


def describe(summary: dict[str, Any]) -> str:
    pooled = summary["pooled"]
    parts = []
    for m in ("balanced_accuracy", "auc"):
        v, (lo, hi) = pooled[m]["value"], pooled[m]["ci95"]
        ms = summary["mean_std"].get(m, {})
        parts.append(
            f"{m.replace('_', ' ')} {v:.3f} (95% CI {lo:.3f}–{hi:.3f}; folds "
            f"{ms.get('mean', float('nan')):.3f} ± {ms.get('std', float('nan')):.3f})"
        )
    return f"{summary['model']} → {summary['run']}: " + "; ".join(parts)
