"""The generated hostile suite (bench/hostile.py), every 10th case: no tracebacks, no wrong exit
codes, one-line errors, no database changed by a failed command, no hang. The full run (about
1,500 cases) is `python bench/hostile.py`."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import hostile  # noqa: E402


def test_the_generator_covers_every_category_with_over_a_thousand_cases():
    cases = hostile.all_cases()
    counts = Counter(c.category.split(" (")[0] for c in cases)
    assert len(cases) >= 1000
    for cat in ("file names: input", "file names: output", "nested JSON", "encodings", "numbers: --where",
                "outputs", "damaged databases"):
        assert counts[cat] >= 30, (cat, counts[cat])


@pytest.fixture(scope="module")
def outcomes():
    return hostile.run_all(hostile.all_cases()[::10], progress=False)


@pytest.mark.parametrize("problem", ["traceback", "exit code", "one line", "database", "hang"])
def test_sampled_generated_cases_have_no(outcomes, problem):
    bad = [f"[{o.case.category}] {o.case.label} -> exit {o.code}: {o.err[-300:]}"
           for o in outcomes if problem in o.problems]
    assert not bad, "\n".join(bad[:10])


def test_the_judge_catches_a_traceback(monkeypatch):
    """The harness itself: a command that raises must be counted, not passed."""
    import cli

    def boom():
        raise ValueError("planted")

    monkeypatch.setattr(cli, "app", boom)
    got = hostile.run_all([hostile.Case("planted", ["runs", "list", "--db", "{db}"])], progress=False)
    assert "traceback" in got[0].problems
