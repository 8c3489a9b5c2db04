"""The report's figure of the plan itself: loss vs N:L at the target, bands, pick, intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.lawcache import load_laws
from planner.recommend import Target, make_plan
from reports.build import plan_curves
from reports.figures import fig_plan


@pytest.fixture(scope="module")
def shipped():
    laws = load_laws()
    plan = make_plan(Target(n_params=1.5e9), "weight-streaming", laws.laws, laws.context, laws.meta).to_dict()
    return laws, plan


def test_curves_are_the_laws_at_the_target_over_the_searched_range(shipped):
    laws, plan = shipped
    curves, notes = plan_curves(plan, laws.laws, laws.context)
    assert not notes and {"sp", "mup", "completep"} <= set(curves["parameterization"])
    for key, c in curves.groupby("parameterization"):
        lo, hi = plan["band"][key]["searched"]
        assert np.isclose(c["ratio"].min(), lo) and np.isclose(c["ratio"].max(), hi)
        assert (c["low"] <= c["loss"] + 1e-12).all() and (c["loss"] <= c["high"] + 1e-12).all()
        p = plan["target"]["n_params_used"]
        mean, _, _ = laws.laws[key].predict(n_params=np.array([p]), n_tokens=np.array([20.0 * p]),
                                            ratio=np.array([c["ratio"].iloc[0]]))
        assert np.isclose(c["loss"].iloc[0], mean[0], rtol=1e-12)
    # the planned law's curve bottoms out at the band's best loss
    best = curves[curves["parameterization"] == "completep"]["loss"].min()
    assert np.isclose(best, plan["band"]["completep"]["best_loss"], rtol=1e-3)


def test_a_missing_or_broken_law_leaves_the_others(shipped):
    laws, plan = shipped

    class Broken:
        def predict(self, **_):
            raise ValueError("no data")

    some = {k: v for k, v in laws.laws.items() if k != "sp"}
    some["mup"] = Broken()
    curves, notes = plan_curves(plan, some, laws.context)
    assert set(curves["parameterization"]) == {k for k in some if k != "mup"}
    assert any("μP" in n and "no data" in n for n in notes)
    empty, _ = plan_curves(plan, {}, laws.context)
    assert empty.empty


def test_figure_draws_curves_intervals_bands_and_the_pick(shipped):
    laws, plan = shipped
    curves, _ = plan_curves(plan, laws.laws, laws.context)
    fig = fig_plan(curves, plan, title="The plan at its target")
    names = [t.name for t in fig.data]
    for label in ("SP", "μP", "CompleteP"):
        assert any(n.startswith(label) and n.endswith("interval") for n in names), label
        assert any(n.startswith(label) and " band N:L " in n for n in names), label
    pick = next(t for t in fig.data if t.name.startswith("pick"))
    assert pick.x[0] == plan["ratio"] and pick.y[0] == plan["predicted_loss"]
    assert pick.error_y.array[0] > 0 and pick.error_y.arrayminus[0] > 0
    assert fig.layout.xaxis.type == "log"


def test_figure_survives_a_plan_with_one_curve_and_no_interval():
    curves = pd.DataFrame({"parameterization": "completep", "ratio": [4.0, 16.0, 64.0], "loss": [3.1, 3.0, 3.05]})
    plan = {"parameterization": "completep", "ratio": 16.0, "n_embd": 512, "n_layer": 32,
            "predicted_loss": 3.0, "predicted_loss_interval": [float("nan"), float("nan")],
            "band": {"completep": {"ratio_min": 8.0, "ratio_max": 40.0, "best_loss": 3.0, "best_ratio": 16.0},
                     "mup": {"ratio_min": 20.0, "ratio_max": 40.0, "best_loss": 3.02}},
            "target": {"n_params_used": 1e8, "tokens_per_param": 20, "tolerance": 0.01}, "alternatives": []}
    fig = fig_plan(curves, plan)
    names = [t.name for t in fig.data]
    assert not any(n.startswith("μP") for n in names)  # no curve for μP: nothing drawn for it
    assert sum(n.startswith("pick") for n in names) == 1 and "interval" not in " ".join(names)


def test_report_page_shows_the_plan_figure_only_with_a_plan(shipped):
    from planner.db import RunDB
    from reports.build import build_report

    laws, _ = shipped
    plan = make_plan(Target(n_params=1.5e9), "weight-streaming", laws.laws, laws.context, laws.meta)
    db = RunDB(None, create=False)
    with_plan = build_report(db, laws, plan)
    assert "The plan at its target" in with_plan and "pick: N=" in with_plan
    assert "The plan at its target" not in build_report(db, laws, None)
