"""`neurocnn tta RUN`: a cross-validated run's fold models re-tested with mirrored test-time augmentation."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurocnn.commands._help import add_command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "tta",
        help="re-test a run's folds with test-time augmentation (scan and its left-right mirror)",
        description="Test every finished fold's model again on its own test subjects with the mean "
        "probability over each scan and its left-right mirror. Writes a run folder (default "
        "RUN/<name of RUN>_tta_flip) that `neurocnn compare` pairs with the run, subject by "
        "subject. Assumes the effect is not lateralised; meant for models trained with flips.",
        example="neurocnn tta runs/mrinet\nneurocnn compare runs/mrinet runs/mrinet/mrinet_tta_flip",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run folder of `neurocnn cv`")
    p.add_argument("--out", type=Path, help="result folder (default RUN/<name of RUN>_tta_flip)")
    p.add_argument("--cache", type=Path, help="the run's prepared cohort, if it has moved since training")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.evaluation.summary import describe
    from neurocnn.evaluation.tta import default_out, tta_run

    summary = tta_run(args.run, args.out, cache=args.cache, overwrite=args.overwrite)
    print(describe(summary))
    print(f"written to {args.out or default_out(args.run)}")
    return 0
