"""`cp-plan fit` options that change how runs are grouped."""

import numpy as np
import pandas as pd
import pytest

from planner.fitter import fit_groups, group_keys


def _runs():
    rng = np.random.default_rng(0)
    rows = []
    for ratio, (n, l) in enumerate(((32, 2), (16, 8), (64, 1))):
        for c in (1e12, 3e12, 1e13, 3e13, 1e14):
            rows.append({"parameterization": "completep", "n_embd": n, "n_layer": l, "flops": c,
                         "n_params": c / 120, "n_tokens": 20.0, "loss": (1.5 + 40 * c ** -0.1) * (1 + 0.01 * ratio)
                         * (1 + 0.001 * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_compute_law_splits_by_shape_unless_pooled():
    df = _runs()
    assert len(set(group_keys("compute", df))) == 3
    assert set(group_keys("compute", df, split_ratio=False)) == {"completep"}
    pooled, _ = fit_groups("compute", df, split_ratio=False)
    split, _ = fit_groups("compute", df)
    assert set(pooled) == {"completep"} and len(split) == 3
    # pooled, the compute law keeps the lowest loss at each budget: the frontier over all shapes,
    # which here is the 32x2 family's curve
    assert pooled["completep"].n == 5 and all(r.n == 5 for r in split.values())
    best = next(r for k, r in split.items() if "ratio=16" in k)
    assert pooled["completep"].values["a"] == pytest.approx(best.values["a"], rel=1e-6)


def test_pool_shapes_is_refused_for_other_laws(tmp_path, capsys):
    import sys

    import cli

    old = sys.argv
    sys.argv = ["cp-plan", "fit", "--law", "shape", "--pool-shapes", "--db", str(tmp_path / "none.sqlite")]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = old
    assert exc.value.code != 0
    assert "--pool-shapes applies to --law compute only" in capsys.readouterr().err


def test_positive_coefficients_keep_positive_intervals_without_bootstrap():
    """Issue 12: where a positive coefficient's Wald interval would cross 0, the interval comes
    from its fitted log scale or a small bootstrap instead, and stays positive."""
    from planner.fitter import fit_law

    triggered = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        c = np.logspace(12, 14, 6)
        df = pd.DataFrame({"flops": c, "loss": (0.1 + 30 * c ** -0.1) * (1 + 0.02 * rng.standard_normal(c.size)),
                           "n_params": c / 1e3, "n_tokens": 1e3 / 6})
        r = fit_law("compute", df, bootstrap=0)
        triggered += "crossed 0" in r.meta["interval_method"]
        for name in r.names:
            if r.values[name] > 0 and name not in (r.meta.get("fixed") or {}):
                assert 0 < r.ci_low[name] <= r.values[name] <= r.ci_high[name], (seed, name, r.ci_low[name])
    assert triggered >= 3  # these small noisy sets are exactly where Wald goes negative
