"""Shared parser construction for the CLI verbs."""

from __future__ import annotations

import argparse
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
