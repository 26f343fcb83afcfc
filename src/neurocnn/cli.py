"""The `neurocnn` command line: parses arguments, calls the API, prints. No logic of its own.

Each verb lives in `neurocnn.commands.<verb>` and exposes `register(subparsers)`, which adds its parser
with an example in the epilog and sets `func` to a function taking the parsed arguments and returning
an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from neurocnn import __version__
from neurocnn.errors import NeuroCNNError, validation_problems

COMMANDS = (
    "demo",
    "synth",
    "cohort",
    "prepare",
    "splits",
    "models",
    "cv",
    "evaluate",
    "predict",
    "tta",
    "baseline",
    "compare",
    "interpret",
    "report",
)

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurocnn",
        description="Train, evaluate and explain 3D CNNs that classify brain MRI scans.",
        epilog="Example:\n  neurocnn demo --quick\n\nRun `neurocnn COMMAND --help` for each command.\n\n"
        "S1–S4 in the help texts are the four reproduced papers:\n"
        "  S1  Hu et al. 2020: sequential and inception 3D CNNs, one branch per modality\n"
        "  S2  Eitel et al. 2019: patch individual filter (PIF) layers\n"
        "  S3  Kan et al. 2020: MriNet; Grad-CAM, guided backprop, Meaningful Perturbation\n"
        "  S4  3D DenseNet for depression: DenseNet/ResNet, 2D slice networks, LBP, transfer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"neurocnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"neurocnn.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except NeuroCNNError as exc:
        if args.debug:
            raise
        print(f"neurocnn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ValidationError as exc:  # settings built from the arguments
        if args.debug:
            raise
        print(f"neurocnn {args.command}: error: {'; '.join(validation_problems(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"neurocnn {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
