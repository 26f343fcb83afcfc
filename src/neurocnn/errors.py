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


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


def flag_problems(exc: Any, flags: dict[str, str]) -> list[str] | None:
    """A pydantic ``ValidationError`` as command-line wording ('--folds must be at least 2'), when every
    bad field is one of ``flags`` (field path -> the option that set it); None otherwise."""
    lines = []
    for e in exc.errors():
        flag = flags.get(".".join(str(p) for p in e["loc"]))
        if flag is None:
            return None
        key, words = _BOUNDS.get(e["type"], (None, None))
        ctx = e.get("ctx") or {}
        if key in ctx:
            lines.append(f"{flag} must be {words} {ctx[key]}, got {e.get('input')!r}")
        else:
            lines.append(f"{flag}: {e['msg'][:1].lower()}{e['msg'][1:]}")
    return lines
