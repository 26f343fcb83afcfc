"""The one exception type neurocnn raises for problems a user can fix.

The message is for a person: it names the subject and file, what was expected and what to do. The CLI
prints it on one line (several lines when several subjects are at fault) and exits with code 2.
"""

from __future__ import annotations

from typing import Any


class NeuroCNNError(Exception):
    """A problem with the user's input or request, explained in its message."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else []
        if self.problems:
            message = message.rstrip() + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


def validation_problems(exc: Any) -> list[str]:
    """A pydantic ``ValidationError`` as one 'field: problem' line per bad field."""
    return [f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
