"""`neurocnn models`: list the model zoo with parameters, output shape and options (names and
defaults); with --timing, also the speed per volume."""

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
        help="list the model zoo (parameters, output shape, options)",
        description=(
            "List every registered network with its family, paper, number of parameters and output "
            "shape, then each model's options (`neurocnn cv --model-option KEY=VALUE`) with their "
            "defaults. --timing also times a forward/backward pass per volume on this machine (batch "
            "of one, CPU; minutes for the whole zoo). With --input-shape every model is built for "
            "that shape; models that cannot take it say which shape they need."
        ),
        example="neurocnn models --input-shape 58x70x58 --family hu2020\n"
        "neurocnn models --name mrinet --timing",
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
        "--timing",
        action="store_true",
        help="also time a forward/backward pass per model (slow: about 3 minutes for the whole zoo)",
    )
    parser.add_argument("--no-timing", action="store_true", help=argparse.SUPPRESS)  # (the old default)
    parser.add_argument("--repeats", type=int, default=1, help="with --timing: timed passes per model")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="with --timing: PyTorch CPU threads (default: PyTorch's choice; on a busy machine 1 "
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


def option_text(meta: Any) -> str:
    """A model's options as ``name=default`` (YAML, as --model-option reads them)."""
    import yaml

    defaults = dict(meta.option_defaults)

    def value(v: Any) -> str:
        v = list(v) if isinstance(v, tuple) else v
        return str(yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip())

    parts = [
        f"{o}={value(defaults[o])}" if o in defaults else f"{o} (the 2D network's default)"
        for o in meta.options
    ]
    return ", ".join(parts) or "none"


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from neurocnn import models
    from neurocnn.errors import NeuroCNNError

    timing = args.timing and not args.no_timing
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
    if timing:
        table.add_column("fwd s/vol", justify="right")
        table.add_column("bwd s/vol", justify="right")
    with Progress(transient=True, disable=not timing, console=Console(stderr=True)) as bar:
        task = bar.add_task("timing", total=len(names))
        for name in names:
            bar.update(task, description=f"timing {name}")
            table.add_row(*_row(name, args.input_shape, timing, args.repeats))
            bar.advance(task)
    # Piped output is not cut to 80 columns: the table is meant to be read whole.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(option_text(models.info(name)), []).append(name)
    console.print("\nOptions (`neurocnn cv --model-option KEY=VALUE`), with their defaults:")
    for text, members in groups.items():
        console.print(f"  [bold]{', '.join(members)}[/bold]: {text}", highlight=False)
    if not timing:
        console.print("\n(--timing also times a forward/backward pass of each model)", style="dim")
    return 0


def _row(name: str, input_shape: Any, timing: bool, repeats: int) -> list[str]:
    import torch

    from neurocnn import models
    from neurocnn.errors import NeuroCNNError
    from neurocnn.models.blocks import InputTooSmall, fmt_shape

    meta = models.info(name)
    shape = input_shape or meta.default_input_shape
    row = [name, meta.family, meta.paper, fmt_shape(shape)]
    try:
        with torch.device("meta"), torch.no_grad():
            probe = models.build(name, input_shape=shape).eval()
            out = probe(torch.empty(1, 1, *shape))
        row += [f"{models.count_parameters(probe):,}", fmt_shape(tuple(out.shape))]
    except InputTooSmall as exc:
        return [*row, "-", f"[red]too small: needs ≥{fmt_shape(exc.need)}[/red]", *(["-", "-"] * timing)]
    except NeuroCNNError as exc:
        return [*row, "-", f"[red]{exc}[/red]", *(["-", "-"] * timing)]
    if timing:
        model = models.build(name, input_shape=shape)
        fwd, bwd = _time_step(model, shape, repeats)
        row += [f"{fwd:.3f}", f"{bwd:.3f}"]
    return row
