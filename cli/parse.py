"""The values `lau` takes on its command line, checked before anything is filed or imported."""

from __future__ import annotations

import argparse
import sys

from cli.output import CliError, Console, ExitCode
from lau.errors import BadInput
from tasks.ledger import check_drop


class Parser(argparse.ArgumentParser):
    """argparse that reports bad options as one line and exit 2 (its usage dump goes nowhere)."""

    def error(self, message: str) -> None:  # noqa: D102
        raise CliError(f"{self.prog}: {message}", ExitCode.BAD_INPUT)

    def print_help(self, file=None) -> None:  # noqa: ANN001, D102 - `lau --help | less` reads stdout
        super().print_help(file or Console.stdout or sys.stdout)


def parse_classes(text: str, flag: str = "--classes") -> list[int]:
    """'3' or '3,5' -> [3, 5]; anything else is bad input."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise BadInput(f"{flag}: expected class ids like 3 or 3,5, got {text!r}")
    try:
        classes = [int(p) for p in parts]
    except ValueError:
        raise BadInput(f"{flag}: class ids must be integers, got {text!r}") from None
    if any(c < 0 for c in classes):
        raise BadInput(f"{flag}: class ids cannot be negative, got {text!r}")
    if len(set(classes)) != len(classes):
        raise BadInput(f"{flag}: a class is listed twice in {text!r}")
    return classes


def parse_drop(text: str | None) -> float | None:
    """--max-retain-drop: a finite number of points between -100 and 100 (negative = strict)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"--max-retain-drop: expected a number of points, got {text!r}") from None
    return check_drop(value)


def parse_ints(text: str, flag: str) -> list[int]:
    """'5000,50000' -> [5000, 50000] (positive integers)."""
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BadInput(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise BadInput(f"{flag}: expected positive integers, got {text!r}")
    return values
