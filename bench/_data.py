"""Where the public benchmark data lives: ``shared/benchdata/`` beside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def benchdata(name: str) -> Path:
    """``shared/benchdata/NAME`` beside the checkout, or two levels up (a git worktree)."""
    for base in (REPO.parent, REPO.parent.parent):
        path = base / "shared" / "benchdata" / name
        if path.exists():
            return path
    return REPO.parent / "shared" / "benchdata" / name


HATECHECK = benchdata("hatecheck_test_suite_cases.csv")
