"""`neurocnn models`: list the model zoo with parameters, output shape and speed per volume."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from neurocnn.commands._help import add_command


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes like 58x70x58, got {text!r}")
    return shape  # type: ignore[return-value]


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "models",
        help="list the model zoo (parameters, output shape, speed)",
        description=(
            "List every registered network with its family, paper, number of parameters, output "
            "shape and forward/backward time per volume on this machine (batch of one, CPU). "
            "With --input-shape every model is built for that shape; models that cannot take it "
            "say which shape they need."
        ),
        example="neurocnn models --input-shape 58x70x58 --family hu2020",
    )
    parser.add_argument(
        "--input-shape",
        type=_parse_shape,
        default=None,
        metavar="XxYxZ",
        help="build every model for this volume shape (default: each paper's shape)",
    )
    parser.add_argument("--family", default=None, help="only this family (e.g. hu2020, slices2d)")
    parser.add_argument("--name", action="append", default=None, help="only this model (repeatable)")
    parser.add_argument(
        "--no-timing", action="store_true", help="skip the forward/backward timing (fast listing)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per model (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PyTorch CPU threads for the timing (default: PyTorch's choice; on a busy machine 1 "
        "can be much faster than several)",
    )
    parser.set_defaults(func=run)


def _time_step(model: Any, shape: tuple[int, ...], repeats: int) -> tuple[float, float]:
    import torch

    x = torch.randn(1, 1, *shape)
    model.train()
    model(x).sum().backward()  # warm-up: allocations, kernel choice
    fwd = bwd = float("inf")
    for _ in range(max(1, repeats)):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model(x)
        t1 = time.perf_counter()
        out.sum().backward()
        t2 = time.perf_counter()
        fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
    return fwd, bwd


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from neurocnn import models
    from neurocnn.errors import NeuroCNNError
    from neurocnn.models.blocks import InputTooSmall, fmt_shape

    if args.threads:
        torch.set_num_threads(args.threads)
    names = models.available(args.family)
    if args.name:
        for name in args.name:
            models.info(name)  # unknown names raise with suggestions
        names = [n for n in names if n in args.name] or list(args.name)
    if not names:
        raise NeuroCNNError(
            f"no models in family {args.family!r}; families: "
            + ", ".join(sorted({models.info(n).family for n in models.available()}))
        )
    table = Table(title="neurocnn model zoo", show_lines=False)
    for col in ("name", "family", "paper", "input", "parameters", "output"):
        table.add_column(col, justify="right" if col == "parameters" else "left", no_wrap=col != "output")
    if not args.no_timing:
        table.add_column("fwd s/vol", justify="right")
        table.add_column("bwd s/vol", justify="right")
    for name in names:
        meta = models.info(name)
        shape = args.input_shape or meta.default_input_shape
        row = [name, meta.family, meta.paper, fmt_shape(shape)]
        try:
            with torch.device("meta"), torch.no_grad():
                probe = models.build(name, input_shape=shape).eval()
                out = probe(torch.empty(1, 1, *shape))
            row += [f"{models.count_parameters(probe):,}", fmt_shape(tuple(out.shape))]
        except InputTooSmall as exc:
            row += ["-", f"[red]too small: needs ≥{fmt_shape(exc.need)}[/red]"]
            table.add_row(*row, *([] if args.no_timing else ["-", "-"]))
            continue
        except NeuroCNNError as exc:
            row += ["-", f"[red]{exc}[/red]"]
            table.add_row(*row, *([] if args.no_timing else ["-", "-"]))
            continue
        if not args.no_timing:
            model = models.build(name, input_shape=shape)
            fwd, bwd = _time_step(model, shape, args.repeats)
            row += [f"{fwd:.3f}", f"{bwd:.3f}"]
            del model
        table.add_row(*row)
    # Piped output is not cut to 80 columns: the table is meant to be read whole.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)
    return 0
