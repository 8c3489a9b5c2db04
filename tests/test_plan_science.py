"""The science behind the plan: a scale-free band criterion, a parameterization gap that
grows with the depth multiplier, intervals that carry seed noise, and the shipped plan at 1.5e9."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.band import Criterion, compute_band, paper_equivalent_overhead
from planner.fit import gap as gapfit
from planner.planlaws import GapLaw, ReferenceLaw, fit_plan_laws, replicate_noise
from planner.recommend import Target, make_plan
from conftest import run_cli_process as _cli

ROOT = Path(__file__).resolve().parent.parent


class MultLaw:
    """L = E + A·P^(−a)·(1 + k·(ln r − μ)²): the penalty scales the reducible loss (no samples' noise)."""

    def __init__(self, E=1.5, A=40.0, a=0.3, k=0.02, mu=math.log(30.0), n=8):
        self.E, self.A, self.a, self.k, self.mu, self.n = E, A, a, k, mu, n

    def predict_samples(self, n_params, n_tokens, ratio):
        p, r = np.asarray(n_params, float), np.asarray(ratio, float)
        loss = self.E + self.A * p ** -self.a * (1 + self.k * (np.log(r) - self.mu) ** 2)
        return np.repeat(loss[None, :], self.n, axis=0)

    def predict(self, n_params, n_tokens, ratio):
        s = self.predict_samples(n_params, n_tokens, ratio)[0]
        return s, s, s


# ---------------------------------------------------------------------- the band criterion


def test_default_overhead_is_the_papers_one_percent_band_at_its_scale():
    # 1% of the Cerebras-GPT law's loss at 1.5B / 20 tokens per param costs a shape ~20% compute
    assert paper_equivalent_overhead() == pytest.approx(0.199, abs=0.01)
    assert Criterion().threshold == pytest.approx(0.2)
    # a tighter loss tolerance means a smaller overhead, monotonically
    assert paper_equivalent_overhead(0.005) < paper_equivalent_overhead(0.01) < paper_equivalent_overhead(0.02)


@pytest.mark.parametrize("n_params", [1e6, 1e9])
def test_compute_band_recovers_the_closed_form_band_at_two_scales_1000x_apart(n_params):
    law = MultLaw()
    crit = Criterion("compute", 0.2)
    # vocab 1 and context 1: FLOPs ≈ 6·P·D, so C ∝ P² at fixed tokens/param and the overhead of a
    # shape with penalty pen is (1 + pen)^(2/a) − 1, whatever E and P are
    band = compute_band(law, n_params, 20.0, crit, (0.5, 2000.0), (0.5, 2000.0), vocab_size=1, seq_len=1)
    half = math.sqrt(((1 + 0.2) ** (law.a / 2) - 1) / law.k)
    step = math.log(4000) / 120 + 0.01
    assert abs(math.log(band["ratio_min"]) - (law.mu - half)) < step
    assert abs(math.log(band["ratio_max"]) - (law.mu + half)) < step
    assert band["identified"] == {"low": True, "high": True}
    assert band["criterion"]["kind"] == "compute"


def test_compute_band_is_scale_free_where_the_total_loss_band_is_not():
    law = MultLaw(E=1.5)
    small = compute_band(law, 1e6, 20.0, Criterion(), (0.5, 2000.0), None, 1, 1)
    large = compute_band(law, 1e9, 20.0, Criterion(), (0.5, 2000.0), None, 1, 1)
    assert small["ratio_min"] == pytest.approx(large["ratio_min"], rel=0.08)
    loss_small = compute_band(law, 1e6, 20.0, Criterion("loss", 0.01), (0.5, 2000.0), None, 1, 1)
    loss_large = compute_band(law, 1e9, 20.0, Criterion("loss", 0.01), (0.5, 2000.0), None, 1, 1)
    # the total-loss band swells as E dominates: at 1e9 it spans far more N:L than at 1e6
    assert loss_large["ratio_min"] < loss_small["ratio_min"] / 3


def test_an_edge_on_the_trained_range_is_not_identified():
    law = MultLaw(k=0.001)  # so flat that the band runs past the trained range on both sides
    band = compute_band(law, 1e9, 20.0, Criterion(), (4.0, 128.0), (4.0, 128.0), 1, 1)
    assert band["identified"] == {"low": False, "high": False}
    assert "edge not identified (trained N:L 4-128)" in band["edges"]["low"]["note"]


@pytest.mark.parametrize("kwargs, match", [
    ({"band_criterion": "median"}, "--band-criterion 'median' is unknown"),
    ({"max_overhead": -0.1}, "--max-overhead -0.1 must be a fraction"),
    ({"confidence": 1.5}, "--confidence 1.5 must be in"),
    ({"n_params": 1e20}, "beyond 1e\\+16 non-embedding parameters"),
])
def test_bad_band_settings_are_one_line_errors(kwargs, match):
    from planner.errors import CpPlanError

    kwargs.setdefault("n_params", 1e9)
    with pytest.raises(CpPlanError, match=match):
        Target(**kwargs)


# ---------------------------------------------------------------------- the gap


def _gap_obs(truth, sizes=(1e5, 1e6, 1e7), depths=(1, 2, 4, 8, 16, 32), base=(64, 2), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    u, v, loss, ref, lev = [], [], [], [], []
    for i, p in enumerate(sizes):
        for depth in depths:
            n = math.sqrt(p / (12 * depth))
            uu, vv = math.log(depth / base[1]), math.log(n / base[0])
            red = 2.0 * p ** -0.2
            u.append(uu), v.append(vv), lev.append(i)
            ref.append(1.0 + red + noise * rng.standard_normal())
            loss.append(1.0 + red * math.exp(truth(uu, vv)) + noise * rng.standard_normal())
    a = np.asarray
    return gapfit.GapObservations(a(u), a(v), a(loss), a(ref), a(lev))


def _fit(obs, sigma=1e-4, n=64):
    e = np.full(n, 1.0)
    ref = np.tile(obs.ref_loss, (n, 1))
    return gapfit.fit_gap(obs, 1.0, obs.ref_loss, e, ref, sigma)


def test_gap_model_recovers_a_gap_that_grows_with_the_depth_multiplier():
    obs = _gap_obs(lambda u, v: 0.05 * u)
    g = _fit(obs)
    best = max(g["forms"], key=lambda f: g["forms"][f]["weight"])
    coefs = g["forms"]["depth"]["coefs"]
    assert coefs["cL"] == pytest.approx(0.05, rel=0.02)
    # extrapolated to a depth multiplier far beyond the runs, the gap keeps growing
    s = np.asarray(g["samples"])
    far = np.median(gapfit.gap_values(s, [math.log(256)], [0.0]))
    near = np.median(gapfit.gap_values(s, [math.log(4)], [0.0]))
    assert far > 3 * near > 0
    assert far == pytest.approx(0.05 * math.log(256), rel=0.1)
    assert best in ("depth", "depth-offset", "depth-width", "depth-quad", "depth-pow")


def test_gap_form_weights_follow_held_out_error():
    # a gap quadratic in ln m_L: the forms that can bend must outweigh the straight line
    obs = _gap_obs(lambda u, v: 0.01 * u * u)
    g = _fit(obs)
    w = {f: v["weight"] for f, v in g["forms"].items()}
    assert w["depth-quad"] + w["depth-pow"] > 0.9 and w["depth"] < 0.05


def test_gap_intervals_carry_seed_noise():
    obs = _gap_obs(lambda u, v: 0.05 * u)
    quiet = np.asarray(_fit(obs, sigma=1e-5)["samples"])
    noisy = np.asarray(_fit(obs, sigma=0.02)["samples"])
    at = [math.log(64)], [0.0]
    spread = lambda s: np.percentile(gapfit.gap_values(s, *at), 97.5) - np.percentile(gapfit.gap_values(s, *at), 2.5)  # noqa: E731
    assert spread(noisy) > 5 * spread(quiet)


def test_replicate_noise_pools_runs_that_differ_only_in_seed():
    rows = []
    rng = np.random.default_rng(1)
    for shape in range(4):
        for seed in range(3):
            cfg = {"n_embd": 32 * (shape + 1), "n_layer": 2, "seed": seed}
            rows.append({"config_json": json.dumps(cfg), "loss": 2.0 + shape * 0.1 + 0.01 * rng.standard_normal()})
    sigma, groups, runs = replicate_noise(pd.DataFrame(rows))
    assert groups == 4 and runs == 12 and 0.004 < sigma < 0.02
    assert replicate_noise(pd.DataFrame(rows[::3]))[0] is None  # one seed per config: no replicates


def _world(noise=0.003, gap=lambda u: 0.04 * u, seed=0):
    """Runs of CompleteP (a multiplicative bowl) and μP (the same, times exp(gap(ln m_L)))."""
    from planner.shapes import shape_for_params

    rng = np.random.default_rng(seed)
    rows = []
    for size in (1e5, 3e5, 1e6):
        for ratio in (2, 4, 8, 16, 32, 64):
            s = shape_for_params(size, ratio, d_head=16)
            red = 30.0 * s.n_params ** -0.3 * (1 + 0.02 * (math.log(s.ratio) - math.log(20)) ** 2)
            for name, g in (("completep", 0.0), ("mup", gap(math.log(s.n_layer / 2)))):
                rows.append({"parameterization": name, "n_embd": s.n_embd, "n_layer": s.n_layer,
                             "n_params": float(s.n_params), "n_tokens": 20.0 * s.n_params,
                             "loss": 1.2 + red * math.exp(g) + noise * rng.standard_normal(),
                             "ratio": s.n_embd / s.n_layer})
    return pd.DataFrame(rows)


def test_plan_laws_predict_run_intervals_wider_than_the_law_by_the_seed_noise():
    df = _world()
    keys = df["parameterization"].to_numpy(dtype=object)
    ctx = {k: {"base": {"base_n_embd": 64, "base_n_layer": 2}} for k in ("completep", "mup")}
    out = fit_plan_laws(df, keys, bootstrap=40, seed=0, contexts=ctx)
    from planner.planlaws import build_laws

    laws = build_laws(json.loads(json.dumps(out)))  # through JSON, as the cache stores it
    assert isinstance(laws["completep"], ReferenceLaw) and isinstance(laws["mup"], GapLaw)
    sigma = out["noise"]["sigma_loss"]
    assert 0.001 < sigma < 0.02  # residual-based: the simulated seed noise is 0.003
    x = dict(n_params=np.array([1e6]), n_tokens=np.array([2e7]), ratio=np.array([16.0]))
    m, lo, hi = (float(v[0]) for v in laws["mup"].predict(**x))
    _, rlo, rhi = (float(v[0]) for v in laws["mup"].predict_run(**x))
    assert lo < m < hi and rlo < lo and rhi > hi
    assert (rhi - rlo) >= 2 * 1.9 * sigma * 0.9
    # the gap grows with depth: at a fixed N:L, μP falls further behind CompleteP as P grows
    rel = []
    for p in (1e6, 1e9):
        xx = dict(n_params=np.array([p]), n_tokens=np.array([20 * p]), ratio=np.array([8.0]))
        e = float(np.median(laws["completep"].e_samples()))
        rel.append((laws["mup"].predict(**xx)[0][0] - e) / (laws["completep"].predict(**xx)[0][0] - e))
    assert rel[1] > rel[0] > 1.0


def test_a_refit_that_predicts_a_larger_model_losing_more_is_capped_at_the_largest_run():
    """A bootstrap refit whose optimum drifts away fast, with a steep bowl on that side, predicts a
    model 1000x larger at a trained N:L to be far worse than the largest run; each sample beyond
    the runs is capped at its own loss at the largest run's size (same N:L and tokens/param)."""
    from planner.planlaws import build_laws

    df = _world()
    keys = df["parameterization"].to_numpy(dtype=object)
    ctx = {k: {"base": {"base_n_embd": 64, "base_n_layer": 2}} for k in ("completep", "mup")}
    ref = build_laws(fit_plan_laws(df, keys, bootstrap=40, seed=0, contexts=ctx))["completep"]
    ref.extra = {**ref.extra, "z": np.zeros_like(np.asarray(ref.extra["z"])).tolist()}  # no extrapolation term
    form, rows = next((f, r) for f, r in ref._rows.items() if "mu1" in ref.forms[f].meta["value_names"])
    names = list(ref.forms[form].meta["value_names"])
    broken = rows[0].copy()
    broken[names.index("mu1")] = 1.5  # the optimum moves 1.5 in ln N:L per e-fold of P
    for k in ("k", "k_deep", "k_wide"):
        if k in names:
            broken[names.index(k)] = 1.0
    ref._rows[form] = np.vstack([broken[None, :], rows[1:]])
    ref.extra = dict(ref.extra)  # forget remembered predictions
    p_max = float(df["n_params"].max())
    at = lambda p: np.asarray(ref.predict_samples(n_params=np.array([p]), n_tokens=np.array([20 * p]),  # noqa: E731
                                                  ratio=np.array([4.0])), float)[:, 0]
    uncapped = ref._forms_predict(dict(n_params=np.array([1e3 * p_max]), n_tokens=np.array([2e4 * p_max]),
                                       ratio=np.array([4.0])))[:, 0]
    i = sum(len(r) for f, r in ref._rows.items() if list(ref._rows).index(f) < list(ref._rows).index(form))
    assert uncapped[i] > at(p_max)[i] + 1.0  # the broken refit, uncapped: a nat worse than at the largest run
    big = at(1e3 * p_max)
    assert np.all(big <= at(p_max) + 1e-12)
    assert big[i] == pytest.approx(at(p_max)[i])
    kept = uncapped < at(p_max)
    assert np.allclose(big[kept], uncapped[kept])  # every sample below the cap is untouched


def test_savings_interval_of_a_gapless_world_crosses_zero_and_says_so():
    df = _world(gap=lambda u: 0.0)
    keys = df["parameterization"].to_numpy(dtype=object)
    ctx = {k: {"base": {"base_n_embd": 64, "base_n_layer": 2}, "ratio_min": 2.0, "ratio_max": 64.0,
               "max_n_params": 1e6, "max_n_tokens": 2e7} for k in ("completep", "mup")}
    from planner.planlaws import build_laws

    laws = build_laws(fit_plan_laws(df, keys, bootstrap=40, seed=0, contexts=ctx))
    plan = make_plan(Target(n_params=1e7, d_head=16), "flat", laws, ctx)
    s = plan.savings["mup"]
    assert s["low"] < 0 < s["high"] and not s["significant"] and "not significant" in s["note"]


# ---------------------------------------------------------------------- the shipped plan


def test_shipped_plan_at_1_5e9_is_a_shape_a_practitioner_would_train():
    from planner import lawcache

    lawset = lawcache.load_laws()
    plan = make_plan(Target(n_params=1.5e9), "weight-streaming", lawset.laws, lawset.context, lawset.meta).to_dict()
    cp = plan["band"]["completep"]
    assert plan["ratio"] >= 8 and cp["trained_range"][0] <= plan["ratio"] <= cp["trained_range"][1]
    for key in ("ratio_min", "ratio_max", "best_ratio", "trained_range", "criterion", "identified", "edges"):
        assert key in cp
    assert plan["extrapolation"]["n_params"] > 1000 and plan["extrapolation"]["n_tokens"] > 1000
    assert "nats/byte" in plan["loss_unit"]
    distinct = len({round(b["ratio_min"], 3) for b in plan["band"].values()}) > 1
    assert distinct or any("cannot be told apart" in w for w in plan["warnings"])
    for s in plan["savings"].values():
        assert s["significant"] == (s["low"] > 0 or s["high"] < 0)
    lo, hi = plan["predicted_loss_interval"]
    assert 0 < lo < plan["predicted_loss"] < hi


# ---------------------------------------------------------------------- the laws cache (issue 10, item 8)


def test_cache_is_keyed_by_its_settings_and_stores_project_relative_paths(tmp_path):
    import shutil

    from planner import lawcache

    db = tmp_path / "runs.sqlite"
    shutil.copy(ROOT / "data" / "runs" / "runs.sqlite", db)
    shutil.copy(ROOT / "data" / "runs" / "laws.json", tmp_path / "laws.json")
    before = (tmp_path / "laws.json").read_bytes()
    lawcache.load_laws(db=str(db), bootstrap=0)  # e.g. `report --bootstrap 0`
    assert (tmp_path / "laws.json").read_bytes() == before  # the default cache is not replaced
    assert (tmp_path / "laws.b0-s0.json").is_file()
    shipped = json.loads((ROOT / "data" / "runs" / "laws.json").read_text())
    assert not str(shipped.get("db", "")).startswith("/"), shipped.get("db")
    assert "/work/" not in json.dumps(shipped)


# ---------------------------------------------------------------------- cp-plan predict


def test_predict_prints_loss_interval_unit_and_data_as_json():
    proc = _cli("predict", "--params", "1.5e9", "--n-tokens", "3e10", "--n-embd", "1152", "--n-layer", "94",
                "-p", "mup", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    lo, hi = d["interval"]
    rlo, rhi = d["run_interval"]
    assert 0 < rlo <= lo < d["loss"] < hi <= rhi
    assert "nats/byte" in d["unit"] and "King James" in d["unit"]
    assert d["extrapolation"]["n_params"] > 1000 and d["parameterization"] == "mup"
    # at a trained shape the law sits near the measured loss (μP, 64x4 at P≈2e5: 1.287)
    near = json.loads(_cli("predict", "--n-embd", "64", "--n-layer", "4", "-p", "mup", "--json").stdout)
    assert near["run_interval"][0] < 1.287 < near["run_interval"][1]


@pytest.mark.parametrize("args, match", [
    (["--n-embd", "64", "--n-layer", "4", "--params", "1e9"], "--params 1e\\+09 does not match n_embd 64"),
    (["--n-embd", "0", "--n-layer", "4"], "--n-embd 0 must be a positive integer"),
    (["--n-embd", "64", "--n-layer", "4", "--n-tokens", "-5"], "--n-tokens -5 must be a positive number"),
    (["--n-embd", "64", "--n-layer", "4", "-p", "ntk"], "unknown parameterization 'ntk'"),
    (["--n-embd", "64", "--n-layer", "4", "-p", "depth-alpha:0.75"], "no law for parameterization 'depth-alpha:0.75'"),
])
def test_predict_bad_input_is_one_line(args, match):
    import re

    proc = _cli("predict", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert re.search(match, lines[0]), lines[0]


def test_candidates_stay_bounded_at_any_scale():
    """Issue 10 item 11: candidates come from a log grid of N:L, not from every width step, so
    the planner's cost does not grow with --params."""
    from planner.hardware import load_profile
    from planner.candidates import candidate_shapes

    hw = load_profile("weight-streaming")
    counts = [len(candidate_shapes(p, hw, 64)) for p in (1e9, 1e12, 1e15)]
    assert max(counts) <= 500 and min(counts) >= 50
    shapes = candidate_shapes(1e15, hw, 64)
    assert all(abs(s.n_params / 1e15 - 1) < 0.2 for s in shapes if s.n_layer > 2)


# ---------------------------------------------------------------------- review findings


def test_gap_samples_meet_reference_forms_at_random_not_in_blocks():
    obs = _gap_obs(lambda u, v: 0.03 * u, noise=0.01, seed=3)  # noisy: several forms share the weight
    g = _fit(obs, sigma=0.01, n=200)
    forms = g["sample_forms"]
    assert len(set(forms)) >= 2
    runs = 1 + sum(a != b for a, b in zip(forms, forms[1:]))  # blocks would give one run per form
    assert runs > 3 * len(set(forms))


def test_cached_gap_law_with_unscored_forms_loads_again():
    from planner.planlaws import build_laws

    df = _world()
    keys = df["parameterization"].to_numpy(dtype=object)
    ctx = {k: {"base": {"base_n_embd": 64, "base_n_layer": 2}} for k in ("completep", "mup")}
    out = json.loads(json.dumps(fit_plan_laws(df, keys, bootstrap=20, seed=0, contexts=ctx)))
    for v in out["gaps"]["mup"]["forms"].values():  # as the cache stores NaN: null
        v["heldout_error"] = None
    laws = build_laws(out)
    assert math.isnan(laws["mup"].heldout_error)


def test_runs_pair_with_their_reference_even_without_seq_len():
    from planner.planlaws import _paired_reference

    ref = pd.DataFrame({"n_embd": [64, 32], "n_layer": [2, 8], "n_tokens": [1e6, 1e6], "loss": [2.0, 2.1],
                        "seq_len": [float("nan")] * 2, "vocab_size": [float("nan")] * 2})
    other = ref.assign(loss=[2.2, 2.3])
    assert np.allclose(_paired_reference(other, ref), [2.0, 2.1])


def test_a_band_over_one_n_l_is_not_identified():
    band = compute_band(MultLaw(), 1e9, 20.0, Criterion(), (16.0, 16.0), (16.0, 16.0), 1, 1)
    assert band["identified"] == {"low": False, "high": False}
    assert "one N:L" in band["edges"]["low"]["note"]


def test_compute_band_counts_attention_flops_and_deficit_band_does_not():
    law = MultLaw(k=0.004)
    short = compute_band(law, 1e8, 20.0, Criterion("compute"), (0.5, 2000.0), None, 50257, 256)
    long = compute_band(law, 1e8, 20.0, Criterion("compute"), (0.5, 2000.0), None, 50257, 16384)
    # at long context deep-narrow shapes spend more FLOPs per token: the compute band moves wider
    assert long["ratio_min"] > 1.5 * short["ratio_min"]
    d_short = compute_band(law, 1e8, 20.0, Criterion("deficit"), (0.5, 2000.0), None, 50257, 256)
    d_long = compute_band(law, 1e8, 20.0, Criterion("deficit"), (0.5, 2000.0), None, 50257, 16384)
    assert d_long["ratio_min"] == pytest.approx(d_short["ratio_min"], rel=0.1)


def test_a_saving_that_is_only_a_bound_is_never_significant():
    from planner.recommend import savings_at
    from planner.shapes import make_shape

    fast = MultLaw(A=40.0)
    slow = MultLaw(A=4000.0)  # needs far more than 1000x the parameters to match
    out, warnings = savings_at({"completep": fast, "mup": slow}, "completep", make_shape(1024, 64, 64),
                               Target(n_params=1e9))
    s = out["mup"]
    assert not s["reachable"] and not s["significant"] and "bound" in s["note"]
    assert any("bound" in w for w in warnings)


def test_nan_percentiles_match_numpy_with_and_without_nans():
    import warnings

    from planner.planlaws import nan_percentiles

    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 40))
    s[rng.random(s.shape) < 0.1] = np.nan
    s[:, 3] = np.nan  # a column of no finite sample stays NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanpercentile(s, [50, 2.5, 97.5], axis=0)
    np.testing.assert_allclose(np.array(nan_percentiles(s, [50, 2.5, 97.5])), want, equal_nan=True)
    clean = rng.normal(size=(50, 7))
    np.testing.assert_allclose(np.array(nan_percentiles(clean, [10, 90])), np.percentile(clean, [10, 90], axis=0))


class _PowerLaw:
    """L(P) = 2 + a·(P/1e4)^-0.3 at any N:L; below ``dip_below`` parameters it falls to 0.5, as a
    law extrapolated far below its runs can (four identical samples)."""

    def __init__(self, a: float, dip_below: float = 0.0):
        self.a, self.dip_below = a, dip_below

    def _loss(self, n_params):
        p = np.asarray(n_params, float)
        return np.where(p < self.dip_below, 0.5, 2.0 + self.a * (p / 1e4) ** -0.3)

    def predict(self, n_params, n_tokens=None, ratio=None):
        loss = self._loss(n_params)
        return loss, loss, loss

    def predict_samples(self, n_params, n_tokens=None, ratio=None):
        return np.tile(self._loss(n_params), (4, 1))


def test_savings_floor_the_other_law_below_its_smallest_run():
    """A law that dips far below its runs must not meet the reference's loss there: below its
    smallest run each sample is floored at its own loss at that run's size."""
    from planner.savings import flop_savings

    ref, other = _PowerLaw(9.0), _PowerLaw(10.0, dip_below=1e3)
    want = 5e3 * (10 / 9) ** (1 / 0.3)  # other(P') = ref(5e3)
    kw = dict(tokens_per_param=20, vocab_size=256, seq_len=128, reference="a", other="b")
    dipped = flop_savings(ref, other, 5e3, 8.0, **kw)
    assert dipped.n_params_other < 1e3 and dipped.fraction < 0  # the crossing lands in the dip
    s = flop_savings(ref, other, 5e3, 8.0, other_min_n_params=1e3, **kw)
    assert s.n_params_other == pytest.approx(want, rel=0.01) and s.fraction > 0
    assert s.low == pytest.approx(s.fraction, rel=0.02) and s.high == pytest.approx(s.fraction, rel=0.02)
    assert flop_savings(ref, _PowerLaw(10.0), 5e3, 8.0, other_min_n_params=1e3, **kw).fraction == \
        pytest.approx(s.fraction, rel=1e-9)  # no dip: the floor changes nothing
