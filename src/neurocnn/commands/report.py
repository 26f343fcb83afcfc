"""`neurocnn report`: one self-contained HTML report of runs and their interpretation."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurocnn.commands._help import add_command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "report",
        help="write the HTML report of runs",
        description="One HTML file with images embedded (opens offline): cohort, "
        "preparation, model and training, metrics with CIs, ROC and learning curves, "
        "confusion matrix, comparison with other runs and paired tests, attribution "
        "maps, top regions, agreement between methods and sanity checks. The first run "
        "is the main one; its interpretation is read from RUN/interpret.",
        example="neurocnn report runs/mrinet runs/svm --out runs/report.html",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders (CNN or baseline)")
    p.add_argument("--out", type=Path, help="HTML file (default: FIRST_RUN/report.html)")
    p.add_argument("--interpret", type=Path, help="interpretation folder (default FIRST_RUN/interpret)")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.report import build_report

    out = build_report(
        args.runs, args.out or args.runs[0] / "report.html", interpretation=args.interpret, title=args.title
    )
    print(f"report: {out}")
    return 0
