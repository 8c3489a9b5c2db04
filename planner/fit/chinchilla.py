"""The ``chinchilla`` law: L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2 and §D.2).

Fitted as Hoffmann et al. and Epoch's replication (Besiroglu et al. 2024, §2) do: Huber loss
(δ = 1e-3) between ln L and LSE(a − α ln N, b − β ln D, e), with a = ln A, b = ln B, e = ln E.
The published recipe runs L-BFGS from each point of a 4500-start grid (a, b ∈ {0, 5, …, 25},
e ∈ {−1, −.5, …, 1.5}, α, β ∈ {0, .5, …, 2}); here the grid is only *evaluated* (one vectorized
pass), the best starts by initial objective and the best variable-projection starts (for each
(α, β) on a 0.05 grid, E, A, B by linear least squares) are refined together by batched
IRLS-LM (:mod:`planner.fit.solver`, analytic Jacobian), and the winner is continued to a tight
tolerance. ``bench/fit_bench.py`` checks that this lands on the published recipe's optimum.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common, solver
from planner.fit.result import FitResult

NAMES = ("E", "A", "B", "alpha", "beta")
THETA = ("a", "b", "e", "alpha", "beta")  # a = ln A, b = ln B, e = ln E (Epoch's parameterization)
LOWER = np.array([-20.0, -20.0, -20.0, 0.0, 0.0])
UPPER = np.array([80.0, 80.0, 5.0, 5.0, 5.0])
HUBER_DELTA = 1e-3
MIN_POINTS = 7  # 5 parameters + 2


def epoch_grid() -> np.ndarray:
    """The 4500 starts of Hoffmann et al./Epoch, rows (a, b, e, α, β)."""
    return np.array(list(itertools.product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                                           np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))), dtype=float)


def log_model(theta: np.ndarray, X: dict) -> tuple[np.ndarray, np.ndarray]:
    """ln L̂ = LSE(a − α ln N, b − β ln D, e) and its Jacobian (softmax weights) for θ (S, 5)."""
    ln_n, ln_d = X["ln_n"], X["ln_d"]
    a, b, e, al, be = (theta[:, k:k + 1] for k in range(5))
    u1 = a - al * ln_n
    u2 = b - be * ln_d
    u3 = np.broadcast_to(e, u1.shape)
    m = np.maximum(np.maximum(u1, u2), u3)
    x1, x2, x3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(u3 - m)
    s = x1 + x2 + x3
    pred = m + np.log(s)
    p1, p2, p3 = x1 / s, x2 / s, x3 / s
    jac = np.stack([p1, p2, p3, -p1 * ln_n, -p2 * ln_d], axis=-1)
    return pred, jac


def log_predict(theta: np.ndarray, X: dict) -> np.ndarray:
    """ln L̂ without the Jacobian (max-shifted log-sum-exp)."""
    a, b, e, al, be = (theta[:, k:k + 1] for k in range(5))
    u1 = a - al * X["ln_n"]
    u2 = b - be * X["ln_d"]
    m = np.maximum(np.maximum(u1, u2), e)
    return m + np.log(np.exp(u1 - m) + np.exp(u2 - m) + np.exp(e - m))


def to_values(theta: np.ndarray) -> np.ndarray:
    a, b, e, al, be = theta.T
    return np.stack([np.exp(e), np.exp(a), np.exp(b), al, be], axis=1)


# Starts are ranked on at most this many runs (evenly spaced through the table) and in batches
# of at most STARTS_BATCH_ELEMENTS (starts × runs): ranking only picks starting points (the fit
# uses every run), so start selection costs the same at 10k runs as at a million, and memory
# stays bounded. Every published table (Epoch's 245 points) is ranked whole, exactly as before.
# The 4500 grid points and 900 projection starts are only ranked by their initial objective,
# on at most GRID_RANK_ROWS runs; the best of them are then solved on RANK_MAX_ROWS runs.
RANK_MAX_ROWS = 20_000
GRID_RANK_ROWS = 4_000
STARTS_BATCH_ELEMENTS = 1_000_000


def rank_subset(X: dict, y: np.ndarray, limit: int = RANK_MAX_ROWS) -> tuple[dict, np.ndarray]:
    """The runs that rank starts: all of them, or ``limit`` evenly spaced ones."""
    if y.size <= limit:
        return X, y
    idx = np.unique(np.linspace(0, y.size - 1, limit).round().astype(int))
    return {k: v[idx] for k, v in X.items()}, y[idx]


def grid_starts(X: dict, y: np.ndarray, delta: float, k: int) -> np.ndarray:
    """The ``k`` best Epoch-grid points by initial objective (vectorized, in batches)."""
    grid = epoch_grid()
    X, y = rank_subset(X, y, GRID_RANK_ROWS)
    per = max(1, STARTS_BATCH_ELEMENTS // max(y.size, 1))
    f0 = np.empty(len(grid))
    w = np.ones(y.size)
    with np.errstate(all="ignore"):
        for i in range(0, len(grid), per):
            f0[i:i + per] = solver.objective(y - log_predict(grid[i:i + per], X), w, delta)
    return grid[np.argsort(f0, kind="stable")[:k]]


def projection_starts(X: dict, y: np.ndarray, delta: float, k: int) -> np.ndarray:
    """Variable projection: for each (α, β) on a 0.05 grid the model is linear in (E, A, B);
    solve that least-squares problem on L (columns scaled), keep positive solutions, rank by
    the Huber objective, return the ``k`` best as θ rows."""
    ex = np.arange(0.05, 1.5001, 0.05)
    al_all, be_all = (g.ravel() for g in np.meshgrid(ex, ex, indexing="ij"))
    X, y = rank_subset(X, y, GRID_RANK_ROWS)
    loss = np.exp(y)
    w = np.ones(y.size)
    per = max(1, STARTS_BATCH_ELEMENTS // (3 * max(y.size, 1)))
    thetas, oks, fs = [], [], []
    for i in range(0, al_all.size, per):
        al, be = al_all[i:i + per], be_all[i:i + per]
        cols = np.stack([np.ones((al.size, y.size)), np.exp(-al[:, None] * X["ln_n"]),
                         np.exp(-be[:, None] * X["ln_d"])], axis=-1)
        norm = np.linalg.norm(cols, axis=1, keepdims=True)
        c = cols / norm
        ctc = c.transpose(0, 2, 1) @ c
        cty = c.transpose(0, 2, 1) @ loss
        with np.errstate(all="ignore"):
            try:
                coef = np.linalg.solve(ctc, cty[..., None])[..., 0] / norm[:, 0, :]
            except np.linalg.LinAlgError:
                return np.empty((0, 5))
            oks.append(np.all(coef > 0, axis=1) & np.all(np.isfinite(coef), axis=1))
            theta = np.stack([np.log(np.abs(coef[:, 1])), np.log(np.abs(coef[:, 2])),
                              np.log(np.abs(coef[:, 0])), al, be], 1)
            fs.append(solver.objective(y - log_predict(theta, X), w, delta))
        thetas.append(theta)
    theta, ok, f = np.concatenate(thetas), np.concatenate(oks), np.concatenate(fs)
    f = np.where(ok & np.isfinite(f), f, np.inf)
    order = np.argsort(f, kind="stable")[:k]
    order = order[np.isfinite(f[order])]
    return np.clip(theta[order], LOWER, UPPER)


def prepare(df) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """(X, y, scale, meta) from a frame of runs: N = n_params, D = n_tokens (or flops/(6N))."""
    common.require_columns(df, ["n_params", "loss"], "chinchilla")
    meta: dict = {}
    n = common.positive_array(df, "n_params", "chinchilla")
    loss = common.positive_array(df, "loss", "chinchilla")
    has_tokens = "n_tokens" in df.columns and df["n_tokens"].notna().all()
    if has_tokens:
        d = common.positive_array(df, "n_tokens", "chinchilla")
        meta["tokens_from"] = "n_tokens"
    elif "flops" in df.columns:
        c = common.positive_array(df, "flops", "chinchilla")
        d = c / (6.0 * n)
        meta["tokens_from"] = "flops / (6 n_params)"
    else:
        raise CpPlanError("the chinchilla law needs n_tokens (or flops, to derive D = C/(6N)) for every run")
    if "flops" in df.columns and df["flops"].notna().all():
        scale = common.positive_array(df, "flops", "chinchilla")
    else:
        scale = 6.0 * n * d
    if len(loss) < MIN_POINTS:
        raise common.too_few("chinchilla", len(loss), MIN_POINTS, "runs (5 parameters + 2)",
                             "add runs, or fit the 3-parameter `compute` law")
    for label, x in (("model sizes N", n), ("token counts D", d)):
        distinct = np.unique(np.round(np.log10(x), 3)).size
        if distinct < 3:
            raise common.too_few("chinchilla", distinct, 3, f"distinct {label}",
                                 "the N and D exponents need runs spread over both; add runs")
    if "flop_convention" in df.columns:
        conv = sorted({str(v) for v in df["flop_convention"].dropna()})
        if conv:
            meta["flop_convention"] = conv
    X = {"ln_n": np.log(n), "ln_d": np.log(d)}
    return X, np.log(loss), scale, meta


def make_spec(X: dict, y: np.ndarray, scale: np.ndarray, meta: dict, delta: float = HUBER_DELTA,
              n_grid_starts: int = 16, n_projection_starts: int = 8) -> common.Spec:
    starts = np.concatenate([grid_starts(X, y, delta, n_grid_starts),
                             projection_starts(X, y, delta, n_projection_starts)])

    def checks(theta, values):
        out = []
        n = np.exp(X["ln_n"])
        d = np.exp(X["ln_d"])
        loss = np.exp(y)
        for term, v in (("A/N^alpha", values["A"] * n ** -values["alpha"]),
                        ("B/D^beta", values["B"] * d ** -values["beta"])):
            if np.max(v / loss) < 1e-3:
                out.append(f"degenerate solution: the {term} term is below 0.1% of the loss at every run; "
                           "its coefficient and exponent are not identified")
        return out

    m = dict(meta)
    m.update(form="E + A/N^alpha + B/D^beta", inputs={"N": "n_params", "D": "n_tokens"},
             reference="Hoffmann et al. 2022 eq. 2; Besiroglu et al. 2024")
    return common.Spec(
        law="chinchilla", names=NAMES, theta_names=THETA, lower=LOWER, upper=UPPER, fn=log_model,
        to_values=to_values, X=X, y=y, starts=starts, delta=delta, scale=scale, meta=m,
        bootstrap_kind="pairs", checks=checks, pointwise=True,
        value_of_theta={"a": "A", "b": "B", "e": "E", "alpha": "alpha", "beta": "beta"},
    )


def refine_on_subset(spec: common.Spec) -> common.Spec:
    """For a table larger than RANK_MAX_ROWS: solve from every start on the ranking subset first,
    and start the full-data fit from the distinct optima found there (at most 6, best first), so
    the many-start search costs what it costs at RANK_MAX_ROWS runs and only a few starts iterate
    over every run. Bootstrap replicates start from the full-data optimum alone: with this many
    runs a replicate's data are nearly the full data and stay in its basin."""
    Xs, ys = rank_subset(spec.X, spec.y)
    idx_scale = rank_subset({"s": spec.scale}, spec.y)[0]["s"]
    pre = common.solve(dataclasses.replace(spec, X=Xs, y=ys, scale=idx_scale), polish=False)
    meta = dict(spec.meta, start_search=f"{len(spec.starts)} starts solved on {ys.size} of {spec.n} runs "
                                         f"(evenly spaced); the full fit starts from their {len(pre.optima)} "
                                         "distinct optima")
    return dataclasses.replace(spec, starts=pre.optima, meta=meta, max_alternates=0)


class ChinchillaLaw:
    """Registry entry: fit, predict from values, parametric samples."""

    name = "chinchilla"
    inputs = ("n_params", "n_tokens", "flops")

    def fit(self, df, bootstrap: int = 0, seed: int = 0, level: float = 0.95, *,
            delta: float = HUBER_DELTA, heldout: bool = True) -> FitResult:
        """Fit to runs with n_params, n_tokens (or flops) and loss; see the module docstring."""
        X, y, scale, meta = prepare(df)
        spec = make_spec(X, y, scale, meta, delta)
        if spec.n > RANK_MAX_ROWS:
            spec = refine_on_subset(spec)
        held = None
        if heldout:
            def builder(mask):  # the same spec on the training runs: starts are not re-ranked
                return dataclasses.replace(spec, X={k: v[mask] for k, v in X.items()}, y=y[mask],
                                           scale=scale[mask])
            held = common.heldout_error(builder, spec)
        return common.fit_spec(spec, bootstrap_n=bootstrap, seed=seed, level=level, heldout=held)

    def predict_values(self, values: np.ndarray, meta: dict, inputs: dict) -> np.ndarray:
        x = common.input_arrays("chinchilla", inputs, self.inputs)
        if "n_params" not in x:
            raise CpPlanError("the chinchilla law predicts from n_params and n_tokens (or flops)")
        n = x["n_params"]
        if "n_tokens" in x:
            d = x["n_tokens"]
        elif "flops" in x:
            d = x["flops"] / (6.0 * n)
        else:
            raise CpPlanError("the chinchilla law needs n_tokens (or flops) to predict")
        v = np.atleast_2d(values)
        e, a, b, al, be = (v[:, k:k + 1] for k in range(5))
        with np.errstate(all="ignore"):
            return e + a * n ** -al + b * d ** -be

    def parametric_samples(self, result: FitResult, n: int) -> np.ndarray:
        return common.parametric_samples(result, to_values, n)
