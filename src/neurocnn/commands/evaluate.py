"""`neurocnn evaluate`: the fold models of a run as an ensemble on an independent labelled cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocnn.commands import _run_cohort
from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "evaluate",
        help="evaluate a run's fold models as an ensemble on an independent cohort",
        description="Prepare the cohort exactly as the run's training cohort was, apply every fold's "
        "best model, and report the mean-probability and majority-vote ensembles (S1) with 95% "
        "bootstrap CIs over participants. Results go to RUN/evaluations/NAME.",
        example="neurocnn evaluate runs/mrinet --cohort ../shared/data/site_b/participants.tsv "
        "--label diagnosis",
    )
    _run_cohort.add_arguments(p)
    p.add_argument("--label", help="label column (default: the run's)")
    p.add_argument("--classes", help="class order of the table, comma-separated")
    p.add_argument("--name", help="name of the evaluation folder (default: the table's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation of the same name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.data.cache import open_cache
    from neurocnn.data.cohort import read_cohort
    from neurocnn.evaluation.ensemble import evaluate_cohort
    from neurocnn.evaluation.predict import check_prepared_alike, prepare_like_run, remove_created

    run_folder = _run_cohort.cnn_run(args.run)
    created: list[Path] = []  # what a failed evaluation removes: the cohort prepared for it
    data = run_folder.data()
    if args.cache is None and args.cohort is None:
        raise NeuroCNNError("give the cohort: --cohort TABLE (or a prepared --cache)")
    name = args.name or (Path(args.cache).name if args.cache is not None else Path(args.cohort).stem)
    out = run_folder.path / "evaluations" / name
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        # e.g. site_a/participants.tsv and site_b/participants.tsv both default to "participants"
        raise NeuroCNNError(
            f"{out} holds an earlier evaluation; give this one another --name, or --overwrite"
        )
    if args.cache is not None:
        cache = open_cache(args.cache)
        check_prepared_alike(run_folder, cache)
        _run_cohort.check_mask(run_folder, cache)
        _run_cohort.check_leakage(run_folder, cache, args.strict)
    else:
        images = args.images.split(",") if args.images else data["modalities"]
        cohort = read_cohort(
            args.cohort,
            images=images,
            label=args.label or data.get("label_column"),
            mask=args.mask,
            classes=args.classes.split(",") if args.classes else None,
        )
        _run_cohort.check_mask(run_folder, cohort)
        _run_cohort.check_leakage(run_folder, cohort, args.strict)
        cache = prepare_like_run(
            run_folder, cohort, jobs=args.jobs, progress=not args.no_progress, created=created
        )
    try:
        result = evaluate_cohort(
            run_folder.path, cache, out, batch_size=args.batch_size, device=_run_cohort.device(args.device)
        )
    except BaseException:
        remove_created(created)
        raise
    if result["n_unlabelled"]:
        print(
            f"warning: {result['n_unlabelled']} subject(s) of {cache.path} have no label and are left "
            "out of the metrics (their predictions are in predictions.csv)",
            file=sys.stderr,
        )
    print(f"{result['n_subjects']} participants, ensemble of {result['n_models']} fold models:")
    for how in ("mean_probability", "majority_vote"):
        ba = result[how]["balanced_accuracy"]
        auc = result[how]["auc"]
        print(
            f"  {how.replace('_', ' ')}: balanced accuracy {ba['value']:.3f} "
            f"(95% CI {ba['ci95'][0]:.3f}–{ba['ci95'][1]:.3f}), AUC {auc['value']:.3f}"
        )
    print(f"{out}: predictions.csv, predictions_per_model.csv, metrics.json")
    return 0
