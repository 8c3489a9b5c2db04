"""Scaling-law fitter: published reference fits, synthetic recovery, degradation, bad input."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.errors import CpPlanError
from planner.fitter import LAWS, FitResult, fit_groups, fit_law, group_keys
from conftest import run_cli

DATA = Path(__file__).parent / "data"


def epoch_frame() -> pd.DataFrame:
    raw = pd.read_csv(DATA / "epoch_chinchilla.csv")
    df = pd.DataFrame({"n_params": raw["Model Size"], "flops": raw["Training FLOP"], "loss": raw["loss"]})
    df["n_tokens"] = df["flops"] / (6.0 * df["n_params"])
    return df


# ---------------------------------------------------------------------- chinchilla


@pytest.fixture(scope="module")
def epoch_fit() -> FitResult:
    return fit_law("chinchilla", epoch_frame(), bootstrap=1000, seed=0, exclude_highest_loss=5)


def test_epoch_refit_reproduced(epoch_fit):
    """Besiroglu et al. 2024 (Epoch): E = 1.8172, A = 477.8, B = 2143, α = 0.3473, β = 0.3672."""
    v = epoch_fit.values
    assert epoch_fit.n == 240
    assert v["E"] == pytest.approx(1.8172, rel=5e-3)
    assert v["alpha"] == pytest.approx(0.3473, rel=5e-3)
    assert v["beta"] == pytest.approx(0.3672, rel=5e-3)
    assert v["A"] == pytest.approx(477.8, rel=0.05)
    assert v["B"] == pytest.approx(2143, rel=0.05)
    assert list(epoch_fit.names) == ["E", "A", "B", "alpha", "beta"]
    assert epoch_fit.meta["excluded_highest_loss"] == 5
    assert max(epoch_fit.meta["excluded_losses"]) == pytest.approx(5.0056, abs=1e-3)
    assert epoch_fit.warnings == ()


def test_epoch_bootstrap_standard_errors(epoch_fit):
    """Epoch's bootstrap SEs: α 0.015, β 0.021, E 0.026 (ours within 25%)."""
    se = epoch_fit.stderr
    assert se["alpha"] == pytest.approx(0.015, rel=0.25)
    assert se["beta"] == pytest.approx(0.021, rel=0.25)
    assert se["E"] == pytest.approx(0.026, rel=0.25)
    assert epoch_fit.meta["bootstrap"]["n_used"] >= 990
    assert epoch_fit.samples.shape[1] == 5
    for k in epoch_fit.names:
        assert epoch_fit.ci_low[k] < epoch_fit.values[k] < epoch_fit.ci_high[k]
    assert math.isfinite(epoch_fit.heldout_error) and 0 < epoch_fit.heldout_error < 0.05
    assert epoch_fit.meta["heldout"]["n_heldout"] == 24


def chinchilla_runs(seed=0, noise=0.004, E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.30):
    rng = np.random.default_rng(seed)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 3e9, 8), np.geomspace(2e8, 1e11, 8)))
    loss = (E + A * n ** -alpha + B * d ** -beta) * np.exp(rng.normal(0, noise, n.size))
    return pd.DataFrame({"n_params": n, "n_tokens": d, "loss": loss, "parameterization": "sp"})


def test_fit_is_deterministic_given_seed():
    df = chinchilla_runs(seed=5)
    a = fit_law("chinchilla", df, bootstrap=40, seed=3, heldout=False)
    b = fit_law("chinchilla", df, bootstrap=40, seed=3, heldout=False)
    c = fit_law("chinchilla", df, bootstrap=40, seed=4, heldout=False)
    assert a.values == b.values and a.stderr == b.stderr
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_chinchilla_synthetic_recovered_and_json_round_trip():
    truth = dict(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.30)
    res = fit_law("chinchilla", chinchilla_runs(), bootstrap=200, seed=1)
    for k, v in truth.items():
        assert res.ci_low[k] <= v <= res.ci_high[k], (k, res.ci_low[k], v, res.ci_high[k])
    back = FitResult.from_json(json.loads(json.dumps(res.to_json(), allow_nan=False)))
    assert back.values == res.values and back.names == res.names and back.warnings == res.warnings
    q = dict(n_params=[7e10], n_tokens=[1.4e12])
    m1, lo1, hi1 = res.predict(**q)
    m2, lo2, hi2 = back.predict(**q)
    assert np.allclose([m1, lo1, hi1], [m2, lo2, hi2])
    assert lo1[0] < m1[0] < hi1[0]
    assert m1[0] == pytest.approx(1.7 + 400 * 7e10 ** -0.34 + 1500 * 1.4e12 ** -0.30, rel=0.01)
    assert res.predict_samples(**q).shape == (res.samples.shape[0], 1)
    # flops instead of n_tokens: D = C / (6N)
    assert res.predict(n_params=[7e10], flops=[6 * 7e10 * 1.4e12])[0][0] == pytest.approx(m1[0])


def test_chinchilla_without_bootstrap_has_asymptotic_intervals():
    res = fit_law("chinchilla", chinchilla_runs(seed=2), bootstrap=0)
    assert res.samples is None and res.meta["interval_method"] == "wald-asymptotic"
    assert all(res.stderr[k] > 0 for k in res.names)
    mean, low, high = res.predict(n_params=[1e9, 1e10], n_tokens=[2e10, 2e11])
    assert np.all(low < mean) and np.all(mean < high)


def test_chinchilla_degenerate_term_warned():
    """Loss independent of D: the B/D^β term must be flagged, not reported as a finding."""
    rng = np.random.default_rng(0)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(2e8, 1e11, 6)))
    loss = (1.8 + 300 * n ** -0.3) * np.exp(rng.normal(0, 0.002, n.size))
    res = fit_law("chinchilla", pd.DataFrame({"n_params": n, "n_tokens": d, "loss": loss}), bootstrap=50)
    text = " ".join(res.warnings)
    assert "B" in text and ("degenerate" in text or "bound" in text or "poorly determined" in text)


# ---------------------------------------------------------------------- compute


def compute_runs(seed=0, levels=7, E=1.7, A=300.0, a=0.15, noise=0.003):
    rng = np.random.default_rng(seed)
    c = np.geomspace(1e15, 1e19, levels)
    n = np.sqrt(c / 120.0)  # 20 tokens per parameter, C = 6ND
    return pd.DataFrame({"flops": c, "loss": (E + A * c ** -a) * np.exp(rng.normal(0, noise, c.size)),
                         "n_params": n, "n_tokens": 20 * n, "parameterization": "mup", "n_embd": 256, "n_layer": 8})


def test_compute_synthetic_recovered():
    res = fit_law("compute", compute_runs(), bootstrap=400, seed=0)
    for k, v in dict(E=1.7, A=300.0, a=0.15).items():
        assert res.ci_low[k] <= v <= res.ci_high[k], (k, res.ci_low[k], v, res.ci_high[k])
    m, lo, hi = res.predict(flops=[1e21])
    assert lo[0] < m[0] < hi[0]
    assert m[0] == pytest.approx(1.7 + 300 * 1e21 ** -0.15, rel=0.02)
    assert math.isfinite(res.heldout_error) and res.heldout_error < 0.05


def test_compute_frontier_keeps_best_run_per_budget():
    df = compute_runs()
    worse = df.copy()
    worse["loss"] *= 1.3  # an off-optimal LR at every budget
    res = fit_law("compute", pd.concat([df, worse], ignore_index=True))
    ref = fit_law("compute", df)
    assert res.values == pytest.approx(ref.values)


def test_compute_three_budgets_fix_e_with_warning():
    res = fit_law("compute", compute_runs(levels=3), bootstrap=50)
    assert res.values["E"] == 0 and res.meta["fixed"] == {"E": 0.0}
    assert any("E is fixed at 0" in w for w in res.warnings)
    with pytest.raises(CpPlanError, match="at least 3 distinct FLOP budgets"):
        fit_law("compute", compute_runs(levels=2))


def test_compute_groups_split_by_parameterization_and_ratio():
    a = compute_runs(seed=1)
    b = compute_runs(seed=2).assign(n_embd=512, n_layer=4)  # N:L 128 vs 32
    c = compute_runs(seed=3).assign(parameterization="sp")
    c["n_embd"] = 264  # ratio 33: rounding, same family as 32
    df = pd.concat([a, b, c], ignore_index=True)
    keys = sorted(set(group_keys("compute", df)))
    assert keys == ["mup/ratio=128", "mup/ratio=32", "sp/ratio=33"]
    results, skipped = fit_groups("compute", df, bootstrap=0)
    assert sorted(results) == keys and skipped == {}
    with pytest.raises(CpPlanError, match="span 3 groups"):
        fit_law("compute", df)


# ---------------------------------------------------------------------- shape

P_REF = 1e6


def shape_runs(sizes, ratios, *, E=1.8, A=0.9, a=0.3, k_deep=0.02, k_wide=0.02, mu0=math.log(40.0), mu1=0.3,
               tpp=20.0, noise=0.002, seed=0, tokens=None, B=0.0, b=0.3):
    """Runs drawn from the shape law written at P_REF (exact P and N:L)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in sizes:
        for j, r in enumerate(ratios):
            d = tpp * p if tokens is None else tokens[j % len(tokens)]
            x = math.log(p / P_REF)
            dl = math.log(r) - mu0 - mu1 * x
            k = k_deep if dl < 0 else k_wide
            loss = E + A * math.exp(-a * x) + B * (d / 2e7) ** -b + k * dl * dl
            rows.append(dict(n_params=p, n_tokens=d, n_embd=r * 8.0, n_layer=8, parameterization="completep",
                             loss=loss * math.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows)


def at_ref(res, A=0.9, a=0.3, mu0=math.log(40.0), mu1=0.3):
    """Truth re-expressed at the fit's reference size."""
    s = math.log(res.meta["n_params_ref"] / P_REF)
    return dict(A=A * math.exp(-a * s), a=a, mu0=mu0 + mu1 * s, mu1=mu1)


RATIOS = [4, 8, 16, 32, 64, 128, 256]


def test_shape_synthetic_recovered_three_sizes():
    res = fit_law("shape", shape_runs([2.5e5, 1e6, 4e6], RATIOS, seed=1), bootstrap=300, seed=0)
    assert res.meta["form"] == "quad-drift"
    sel = res.meta["selection"]
    assert sel["by"].startswith("leave-largest-scale-out") and set(sel["errors"]) == {"quad-fixed", "quad-drift", "asym-drift"}
    assert sel["errors"]["quad-drift"] < sel["errors"]["quad-fixed"]  # the drift is real
    truth = dict(E=1.8, k=0.02, **at_ref(res))
    for k, v in truth.items():
        assert res.ci_low[k] <= v <= res.ci_high[k], (k, res.ci_low[k], v, res.ci_high[k])
    assert res.meta["folded"] == "tpp" and res.meta["tokens_per_param"] == pytest.approx(20)
    assert any("folded" in w for w in res.warnings)
    # trained on 2 sizes the held-out refit fixes E = 0, so the level extrapolates with a few % error
    assert math.isfinite(res.heldout_error) and res.heldout_error < 0.06
    assert res.meta["heldout"]["train_fixed"] == {"E": 0.0}
    # the loss-optimal N:L at an untrained 64x larger size: exp(mu0 + mu1 ln(P/P_ref))
    p_new = 6.4e7
    grid = np.geomspace(4, 2048, 400)
    mean = res.predict(n_params=np.full(grid.size, p_new), n_tokens=20 * p_new, ratio=grid)[0]
    r_true = 40.0 * (p_new / P_REF) ** 0.3
    assert grid[np.argmin(mean)] == pytest.approx(r_true, rel=0.15)


def test_shape_asymmetric_penalty_selected():
    res = fit_law("shape", shape_runs([2.5e5, 1e6, 4e6], RATIOS, k_deep=0.004, k_wide=0.04, seed=2), bootstrap=100)
    assert res.meta["form"] == "asym-drift"
    assert res.values["k_deep"] < res.values["k_wide"]
    assert res.ci_low["k_deep"] <= 0.004 <= res.ci_high["k_deep"]
    assert res.ci_low["k_wide"] <= 0.04 <= res.ci_high["k_wide"]


def test_shape_two_sizes_degrades_with_warnings():
    """2 sizes × 7 ratios: E not identifiable (fixed), no held-out error, selection by LOO."""
    res = fit_law("shape", shape_runs([5e5, 2e6], RATIOS, seed=3), bootstrap=100)
    assert res.values["E"] == 0.0 and res.stderr["E"] == 0.0
    assert math.isnan(res.heldout_error)
    assert res.meta["selection"]["by"].startswith("leave-one-out")
    text = " ".join(res.warnings)
    assert "fixed at 0" in text and "held-out error not computed" in text
    # still a usable bowl: the optimum ratio at a trained size is close to the truth
    grid = np.geomspace(4, 256, 300)
    mean = res.predict(n_params=np.full(grid.size, 2e6), n_tokens=4e7, ratio=grid)[0]
    assert grid[np.argmin(mean)] == pytest.approx(40 * 2 ** 0.3, rel=0.2)


def test_shape_tokens_varying_keeps_both_terms():
    tokens = [5e6, 2e7, 8e7]
    df = pd.concat([shape_runs([2.5e5, 1e6, 4e6], RATIOS, tokens=[t], B=0.5, seed=i) for i, t in enumerate(tokens)],
                   ignore_index=True)
    res = fit_law("shape", df, bootstrap=0)
    assert res.meta["folded"] is None and "B" in res.names and "b" in res.names
    assert res.values["b"] == pytest.approx(0.3, abs=0.1)
    with pytest.raises(CpPlanError, match="pass n_tokens"):
        res.predict(n_params=[1e6], ratio=[40])


def test_shape_folded_law_refuses_other_tokens_per_param():
    res = fit_law("shape", shape_runs([2.5e5, 1e6, 4e6], RATIOS), bootstrap=0)
    assert np.isfinite(res.predict(n_params=[1e8], n_tokens=[2e9], ratio=[64])[0]).all()
    with pytest.raises(CpPlanError, match="tokens per parameter"):
        res.predict(n_params=[1e8], n_tokens=[5e8], ratio=[64])


def test_shape_sizes_come_from_sweeps_when_realized_counts_interleave():
    """Rounded shapes miss the target P by tens of percent; runs of one sweep are one size."""
    wobble = [0.75, 1.0, 1.3, 0.8, 1.2, 0.9, 1.1]
    parts = []
    for p in (1e5, 1.6e5, 2.56e5):
        df = shape_runs([p], RATIOS, seed=int(p) % 7)
        df["n_params"] = p * np.array(wobble)
        df["n_tokens"] = 20 * df["n_params"]
        x = np.log(df["n_params"] / P_REF)
        dl = np.log(df["n_embd"] / df["n_layer"]) - math.log(40) - 0.3 * x
        df["loss"] = 1.8 + 0.9 * np.exp(-0.3 * x) + 0.02 * dl * dl
        df["sweep_id"] = f"shape-P{p:.3g}"
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    res = fit_law("shape", df, bootstrap=0)
    assert res.meta["n_sizes"] == 3 and res.meta["size_levels_from"].startswith("sweep_id")
    assert res.meta["heldout"]["n_heldout"] == len(RATIOS)
    assert res.values["mu1"] == pytest.approx(0.3, abs=0.05)
    with pytest.raises(CpPlanError, match="one size"):  # without sweep ids, gaps cannot separate them
        fit_law("shape", df.drop(columns="sweep_id"))


def test_shape_needs_two_sizes_and_three_ratios():
    with pytest.raises(CpPlanError, match="2 or more sizes"):
        fit_law("shape", shape_runs([1e6], RATIOS))
    with pytest.raises(CpPlanError, match="distinct N:L"):
        fit_law("shape", shape_runs([1e6, 4e6], [16, 32]))


# ---------------------------------------------------------------------- isoflop


def test_isoflop_porian_exponent_inside_authors_interval():
    """Porian et al. 2024, 'Optimizer tuning (no decay)' (RefinedWeb, standard FLOP count)."""
    pts = pd.read_csv(DATA / "isoflop_points.csv")
    rep = pd.read_csv(DATA / "fits_reported.csv")
    label = "Optimizer tuning (no decay)"
    g = pts[pts["label"] == label]
    df = pd.DataFrame({"flops": g["flops"], "n_params": g["n"], "n_tokens": g["t"], "loss": g["loss"]})
    res = fit_law("isoflop", df, bootstrap=300, seed=0)
    r = rep[rep["label"] == label].iloc[0]
    assert r["n_exponent_ci95_lo"] <= res.values["a"] <= r["n_exponent_ci95_hi"]
    assert res.ci_low["a"] < res.values["a"] < res.ci_high["a"]
    assert res.values["a"] + res.values["b"] == pytest.approx(1.0, abs=1e-6)  # D = C/(6N) in their data
    assert res.meta["n_budgets_used"] >= 10
    n_star = res.predict(flops=[1e20])[0][0]
    assert n_star == pytest.approx(res.values["n_coef"] * 1e20 ** res.values["a"])


def isoflop_runs(budgets, E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, span=8.0, per=9, noise=0.0, seed=0):
    """IsoFLOP profiles of a Chinchilla law (C = 6ND), sizes log-spaced around the optimum."""
    rng = np.random.default_rng(seed)
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    rows = []
    for c in budgets:
        n_opt = g * (c / 6) ** (beta / (alpha + beta))
        for n in n_opt * np.geomspace(1 / span, span, per):
            d = c / (6 * n)
            loss = (E + A * n ** -alpha + B * d ** -beta) * math.exp(rng.normal(0, noise))
            rows.append(dict(flops=c, n_params=n, n_tokens=d, loss=loss))
    return pd.DataFrame(rows)


def test_isoflop_synthetic_exponent_recovered():
    res = fit_law("isoflop", isoflop_runs(np.geomspace(1e18, 1e21, 6), noise=0.002, seed=1), bootstrap=300)
    assert res.ci_low["a"] <= 0.28 / 0.62 <= res.ci_high["a"]
    assert res.values["a"] == pytest.approx(0.28 / 0.62, abs=0.02)


def test_isoflop_refuses_budgets_without_interior_minimum():
    good = isoflop_runs(np.geomspace(1e18, 1e20, 4))
    edge = isoflop_runs([1e21])
    edge = edge[edge["n_params"] <= edge["n_params"].median()]  # only the small half: minimum at the edge
    res = fit_law("isoflop", pd.concat([good, edge], ignore_index=True))
    assert res.meta["n_budgets_used"] == 4
    assert any("1e+21 skipped" in w and "interior" in w for w in res.warnings)
    one = isoflop_runs([1e18])
    with pytest.raises(CpPlanError, match="interior loss minimum"):
        fit_law("isoflop", pd.concat([one, edge], ignore_index=True))


# ---------------------------------------------------------------------- bad input


def test_bad_input_names_problem_and_fix():
    df = chinchilla_runs()
    with pytest.raises(CpPlanError, match="unknown law"):
        fit_law("kaplan", df)
    with pytest.raises(CpPlanError, match="no runs"):
        fit_law("chinchilla", df.iloc[:0])
    with pytest.raises(CpPlanError, match="only 1 run"):
        fit_law("chinchilla", df.iloc[:1])
    bad = df.copy()
    bad["run_id"] = [f"r{i}" for i in range(len(bad))]
    bad.loc[3, "loss"] = np.nan
    with pytest.raises(CpPlanError, match=r"non-finite .*loss.*r3"):
        fit_law("chinchilla", bad)
    with pytest.raises(CpPlanError, match="at least 7 runs"):
        fit_law("chinchilla", df.iloc[:5])
    with pytest.raises(CpPlanError, match="needs column"):
        fit_law("compute", df.drop(columns=["loss"]).assign(flops=1e18))
    two = pd.concat([df, df.assign(parameterization="mup")], ignore_index=True)
    with pytest.raises(CpPlanError, match="--where parameterization"):
        fit_law("chinchilla", two)
    with pytest.raises(CpPlanError, match="bootstrap"):
        fit_law("chinchilla", df, bootstrap=-1)
    with pytest.raises(CpPlanError, match="unknown option.*windw"):
        fit_law("isoflop", df, windw=2)
    res = fit_law("chinchilla", df, heldout=False)
    with pytest.raises(CpPlanError, match="unknown input"):
        res.predict(n_params=[1e9], n_tokens=[1e10], ratio=[3])
    with pytest.raises(CpPlanError, match="positive finite"):
        res.predict(n_params=[-1], n_tokens=[1e10])


def test_registry_and_fitting_imports_no_torch_plotly_or_scipy():
    assert set(LAWS) == {"chinchilla", "compute", "shape", "isoflop"}
    import subprocess

    code = ("import sys, numpy as np, pandas as pd; from planner.fitter import fit_law; "
            "c = np.geomspace(1e15, 1e19, 5); "
            "fit_law('compute', pd.DataFrame({'flops': c, 'loss': 1.7 + 300 * c ** -0.15}), bootstrap=20); "
            "bad = [m for m in ('torch', 'plotly', 'scipy') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------- CLI


def test_cli_fit_empty_and_one_run_databases(tmp_path, capsys, monkeypatch):
    from planner.db import RunDB

    path = tmp_path / "runs.sqlite"
    RunDB(path).close()
    code, out, err = run_cli("fit", "--law", "chinchilla", "--db", path)
    assert code == 1 and err.count("\n") == 1 and "no finished runs" in err and "import" in err
    db = RunDB(path)
    db.import_frame(chinchilla_runs().iloc[:1], source="test")
    db.close()
    code, out, err = run_cli("fit", "--law", "chinchilla", "--db", path)
    assert code == 1 and err.count("\n") == 1 and "only 1 finished run" in err


def test_cli_fit_json_and_out_file(tmp_path, capsys, monkeypatch):
    from planner.db import RunDB

    path = tmp_path / "runs.sqlite"
    db = RunDB(path)
    db.import_frame(pd.concat([compute_runs(seed=1), compute_runs(seed=2).assign(parameterization="sp")],
                              ignore_index=True), source="test")
    db.close()
    out_file = tmp_path / "laws.json"
    code, out, err = run_cli("fit", "--law", "compute", "--db", path, "--bootstrap", "50",
                             "--json", "--out", out_file)
    assert code == 0, err
    payload = json.loads(out)
    assert sorted(payload["laws"]) == ["mup/ratio=32", "sp/ratio=32"]
    entry = payload["laws"]["sp/ratio=32"]
    assert entry["names"] == ["E", "A", "a"] and entry["n_samples"] > 40 and "samples" not in entry
    saved = json.loads(out_file.read_text())
    res = FitResult.from_json(saved["laws"]["sp/ratio=32"])
    assert res.samples.shape[0] == entry["n_samples"]
    assert res.values["a"] == pytest.approx(entry["values"]["a"])
    code, out, err = run_cli("fit", "--law", "compute", "--db", path, "--where",
                             "parameterization=sp", "--bootstrap", "0")
    assert code == 0, err
    assert "compute law — sp/ratio=32" in out and "asymptotic" in out and "mup" not in out


def test_m_out_of_n_bootstrap_estimates_the_full_bootstrap_spread(monkeypatch):
    """A large table of a pointwise law is bootstrapped m-out-of-n (planner.fit.common.BOOT_MAX_ROWS,
    deviations scaled by √(m/n)): same optimum, and each parameter's bootstrap standard error
    within 30% of the full n-out-of-n bootstrap's (about 15% is Monte Carlo at 60 replicates).
    Without the √(m/n) scaling they would be √(n/m) = 2.8× too wide."""
    from planner.fit import common
    from planner.fitter import fit_law

    rng = np.random.default_rng(3)
    n_runs = 8000
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n_runs))
    D = N * np.exp(rng.uniform(np.log(5), np.log(100), n_runs))
    L = (1.8172 + 477.8 / N ** 0.3473 + 2143 / D ** 0.3672) * np.exp(rng.normal(0, 0.01, n_runs))
    df = pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L})
    monkeypatch.setattr(common, "BOOT_MAX_ROWS", 1000)
    sub = fit_law("chinchilla", df, bootstrap=60, seed=0)
    assert sub.meta["bootstrap"]["m_out_of_n"] == 1000
    monkeypatch.setattr(common, "BOOT_MAX_ROWS", 10**9)
    full = fit_law("chinchilla", df, bootstrap=60, seed=0)
    assert "m_out_of_n" not in full.meta["bootstrap"]
    for k in full.names:
        assert sub.values[k] == full.values[k]
        assert sub.stderr[k] == pytest.approx(full.stderr[k], rel=0.3), k
