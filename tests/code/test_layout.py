"""The test tree itself: pytest imports test files by basename (no __init__.py packages here)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_names_are_unique_across_folders() -> None:
    """Two test_x.py in different folders stop the whole run at collection (`make test` fails)."""
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1], names.most_common(3)
