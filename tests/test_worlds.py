"""Calibration of the plan's intervals on the fixed subset of simulated worlds (bench/worlds.py
--quick): every world goes through `cp-plan runs import` -> `cp-plan recommend`, and each
quantity's 95% interval must cover the world's truth in at least QUICK_MIN_COVERAGE of them.
With 12 worlds at a true 95%, 9 of 12 or fewer happens with probability about 2%; before the
extrapolation term (planner.fit.extrapolation) savings vs SP covered 3 of 12."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import worlds  # noqa: E402


def test_quick_world_family_intervals_cover_the_truth():
    summary = worlds.main(["--quick", "--json", "--bootstrap", "100"])
    assert summary["n_worlds"] == len(worlds.QUICK)
    low = {q: c for q, c in summary["coverage"].items() if c < worlds.QUICK_MIN_COVERAGE}
    assert not low, f"coverage below {worlds.QUICK_MIN_COVERAGE:.0%} on the quick world family: {low}"
    assert summary["null_false_significant"] <= 0.5


def test_hull_distance_is_zero_inside_and_grows_outside():
    from planner.fit.extrapolation import hull_distance

    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    d = hull_distance(square, np.array([[0.5, 0.5], [2.0, 0.5], [2.0, 2.0], [1.0, 1.0]]))
    assert d[0] == 0 and d[3] == pytest.approx(0, abs=1e-12)
    assert d[1] == pytest.approx(1.0) and d[2] == pytest.approx(np.sqrt(2))
    line = np.array([[0, 0], [1, 1], [2, 2]])  # collinear runs (one size): distance from the segment
    assert hull_distance(line, np.array([[3, 3], [1, 0]])) == pytest.approx([np.sqrt(2), np.sqrt(0.5)])


def test_gap_extrapolation_term_widens_with_distance_and_vanishes_inside():
    from planner.fit.extrapolation import gap_term

    extra = {"z": [1.0, -2.0], "hull": [[0, 0], [1, 0], [0, 1]], "kappa": 0.1, "scale_floor": 0.01}
    u = np.array([0.2, 2.0, 4.0])
    t = gap_term(extra, u, np.array([0.2, 0.0, 0.0]), 0.05 * u)  # the forms' point fit g = 0.05·u
    assert np.all(t[:, 0] == 0)
    assert abs(t[0, 2]) > abs(t[0, 1]) > 0 and t[1, 2] == pytest.approx(-2 * t[0, 2])
