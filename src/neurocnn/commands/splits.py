"""`neurocnn splits`: subject-level splits of a prepared cohort, saved as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurocnn.commands._help import add_command, floats


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "splits",
        help="make subject-level cross-validation splits",
        description="Stratified k-fold by participant (repeated, nested), or "
        "train/validation/test fractions, optionally on a random subset of the "
        "training data. The table is refused if a participant would leak across roles.",
        example="neurocnn splits cache/ixi_3mm --folds 10 --repeats 2 --out runs/x/splits.tsv",
    )
    p.add_argument("cache", type=Path, help="prepared cohort folder")
    p.add_argument("--out", type=Path, required=True, help="split table to write (TSV)")
    p.add_argument("--folds", type=int, default=10, help="k of stratified k-fold (default 10)")
    p.add_argument("--repeats", type=int, default=1, help="repetitions with different splits (default 1)")
    p.add_argument("--val", type=float, default=0.1, help="validation share carved from training")
    p.add_argument("--nested", type=int, default=0, help="inner folds for nested CV (0: none)")
    p.add_argument(
        "--holdout", type=floats(3), help="train,val,test fractions instead of k-fold, e.g. 0.8,0.1,0.1"
    )
    p.add_argument("--subset", type=float, help="keep this stratified share of training subjects")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.data import splits as S
    from neurocnn.data.cache import open_cache

    manifest = open_cache(args.cache).manifest
    S.check_two_classes(manifest, args.cache)
    if args.holdout:
        table = S.holdout(manifest, args.holdout, repeats=args.repeats, seed=args.seed)  # type: ignore[arg-type]
    else:
        table = S.kfold(
            manifest,
            args.folds,
            repeats=args.repeats,
            val_fraction=args.val,
            seed=args.seed,
            nested=args.nested,
        )
    if args.subset:
        table = S.subsample(table, args.subset, seed=args.seed)
    S.save_splits(table, args.out)
    outer = table[table["inner"] == -1]
    first = outer[(outer["repeat"] == 0) & (outer["fold"] == 0)]
    counts = first.groupby("role")["participant_id"].nunique()
    n_splits = len(outer[["repeat", "fold"]].drop_duplicates())
    print(
        f"{args.out}: {n_splits} split(s); the first has "
        + ", ".join(f"{int(counts.get(r, 0))} {r}" for r in S.ROLES)
        + " participants"
    )
    return 0
