"""Shared parser construction for the CLI verbs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_command(sub: Any, name: str, *, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose help ends with an example invocation."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="Example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def floats(count: int, *, allow_none: bool = False) -> Callable[[str], tuple[float, ...] | None]:
    """An argparse type: exactly ``count`` comma-separated numbers (or 'none' when allowed)."""

    def parse(text: str) -> tuple[float, ...] | None:
        if allow_none and text.strip().lower() == "none":
            return None
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            extra = " or 'none'" if allow_none else ""
            raise argparse.ArgumentTypeError(f"{text!r}: expected {count} comma-separated numbers{extra}")
        return values

    return parse
