"""FLOP savings of one parameterization over another, from fitted shape laws (no torch).

Definition (the paper's way of reporting "CompleteP saves 12–34% of μP's FLOPs", Dey et al. 2025,
§5 and Fig. 1): fix a shape family — an N:L ratio — and a tokens-per-parameter line D = tpp·P.
The reference parameterization at P reaches predicted loss ℓ = L_ref(P, tpp·P, N:L). Solve for the
P' at which the other parameterization reaches the same ℓ along the same family,
L_other(P', tpp·P', N:L) = ℓ. Then

    fraction saved = 1 − C_ref / C_other,   C = flops_per_token(N, L) · tpp · P

with N, L the continuous shape of that family at that P and FLOPs counted with
``planner.shapes.FLOP_CONVENTION`` (6P + 6NV + 12LNT per token, PaLM appendix B; the 6ND figure
is reported beside it). Positive: the reference needs less compute; negative: more. The interval
pairs bootstrap refit b of one law with refit b of the other (they are fitted independently) and
takes percentiles of the per-refit fractions; with samples, the reported fraction is their median
(the point of the medians' curves can fall outside a skewed interval far from the data).

A law is anything with ``predict(n_params=, n_tokens=, ratio=) -> (mean, low, high)`` and
``predict_samples(...) -> array (B, n)``, e.g. ``planner.fitter.FitResult`` of the ``shape`` law.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from planner.errors import CpPlanError
from planner.shapes import FLOP_CONVENTION, FLOP_CONVENTION_6ND, flops_per_token

SPAN = 1e3  # search P' within [P/SPAN, P·SPAN]
GRID = 601  # log-spaced points over that span (1% steps in P'); crossings are interpolated


def continuous_shape(n_params, ratio):
    """Real-valued (n_embd, n_layer) with N/L = ``ratio`` and L·(12N² + 13N) + 2N = ``n_params``
    (docs/PARAMETERIZATION.md's exact count, solved by Newton's method; vectorized)."""
    p = np.asarray(n_params, dtype=float)
    r = np.asarray(ratio, dtype=float)
    n = np.cbrt(p * r / 12.0)
    for _ in range(30):
        f = (12.0 * n**3 + 13.0 * n**2) / r + 2.0 * n - p
        df = (36.0 * n**2 + 26.0 * n) / r + 2.0
        step = f / df
        n = np.maximum(n - step, 1e-9)
        if not np.any(np.abs(step) > 1e-15 * n):  # converged (quadratically, from the cube root)
            break
    return n, n / r


def family_flops(n_params, ratio, tokens_per_param: float, vocab_size: int, seq_len: int,
                 convention: str = FLOP_CONVENTION):
    """Training FLOPs of the continuous shape (``n_params``, ``ratio``) trained on
    tokens_per_param · n_params tokens, under ``convention`` (FLOP_CONVENTION or 6ND)."""
    p = np.asarray(n_params, dtype=float)
    tokens = tokens_per_param * p
    if convention == FLOP_CONVENTION_6ND:
        return 6.0 * p * tokens
    if convention != FLOP_CONVENTION:
        raise CpPlanError(f"FLOP convention {convention!r} is unknown; use {FLOP_CONVENTION} or {FLOP_CONVENTION_6ND}")
    n, l = continuous_shape(p, ratio)
    # flops_per_token counts the exact P of (n, l), which equals p by construction.
    return flops_per_token(n, l, vocab_size, seq_len) * tokens


@dataclass(frozen=True)
class Savings:
    """Compute the ``other`` parameterization needs to match ``reference``'s predicted loss."""

    reference: str
    other: str
    ratio: float  # the N:L family
    n_params: float  # reference's non-embedding params
    tokens_per_param: float
    target_loss: float  # reference's predicted loss at n_params
    n_params_other: float  # P' at which other reaches target_loss (a bound when not reachable)
    flops_reference: float
    flops_other: float
    fraction: float  # 1 − C_ref / C_other under `convention`
    low: float  # percentile interval over paired bootstrap refits (NaN without samples)
    high: float
    level: float
    fraction_6nd: float  # the same under 6ND (= 1 − (P/P')²)
    convention: str
    reachable: bool  # False: other's law does not reach target_loss within P·SPAN (fraction is a lower bound)
    n_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def crossing(log_p: np.ndarray, losses: np.ndarray, target: np.ndarray):
    """Per row of ``losses`` (rows × grid), the log P where the curve first falls to ``target``
    (linear interpolation in log P). Rows that never reach it give +inf; rows already below at
    the smallest P give that P (a bound) and are flagged."""
    below = losses <= target[:, None]
    reached = below.any(axis=1)
    first = np.where(reached, below.argmax(axis=1), losses.shape[1] - 1)
    out = np.full(losses.shape[0], np.inf)
    at_start = reached & (first == 0)
    out[at_start] = log_p[0]
    mid = reached & (first > 0)
    i = first[mid]
    rows = np.nonzero(mid)[0]
    y0, y1 = losses[rows, i - 1], losses[rows, i]
    t = np.where(y0 != y1, (y0 - target[rows]) / np.where(y0 != y1, y0 - y1, 1.0), 1.0)
    out[rows] = log_p[i - 1] + np.clip(t, 0.0, 1.0) * (log_p[i] - log_p[i - 1])
    return out, reached, at_start


def flop_savings(reference_law, other_law, n_params: float, ratio: float, *,
                 tokens_per_param: float = 20.0, vocab_size: int = 50257, seq_len: int = 2048,
                 reference: str = "completep", other: str = "mup", level: float = 0.95,
                 convention: str = FLOP_CONVENTION, other_min_n_params: float | None = None) -> Savings:
    """Fraction of ``other``'s compute that ``reference`` saves at the same loss, same N:L and
    same tokens-per-parameter line (module docstring), with a paired-bootstrap interval.

    ``other_min_n_params``: the smallest P among the other law's runs. Below it the other law's
    loss is floored at its own value there (per sample): a model smaller than any run is not
    better than the smallest run, while a law extrapolated downward can dip (a gap form at
    ln m_L < 0 predicted 1.1 nats at 25 parameters against 4.0 at 2,500), and the crossing would
    land in the dip."""
    for label, value in (("n_params", n_params), ("ratio", ratio), ("tokens_per_param", tokens_per_param)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise CpPlanError(f"{label}={value!r} must be a positive finite number")
    if not 0 < level < 1:
        raise CpPlanError(f"level={level} must be in (0, 1), e.g. 0.95")
    p = float(n_params)
    grid = p * np.logspace(-math.log10(SPAN), math.log10(SPAN), GRID)
    log_grid = np.log(grid)
    ones = np.full(GRID, float(ratio))

    target = float(np.asarray(reference_law.predict(
        n_params=np.array([p]), n_tokens=np.array([tokens_per_param * p]), ratio=np.array([float(ratio)]))[0])[0])
    floor_p = float(other_min_n_params) if other_min_n_params and other_min_n_params > grid[0] else None
    at_floor = dict(n_params=np.array([floor_p or p]), n_tokens=np.array([tokens_per_param * (floor_p or p)]),
                    ratio=np.array([float(ratio)]))

    def floored(values, p_eval, floor_values):
        """``values`` (rows × points) with every point below floor_p raised to the row's floor."""
        if floor_p is None:
            return values
        below = p_eval < floor_p
        return np.where(below[None, :], np.maximum(values, np.reshape(floor_values, (-1, 1))), values)

    point_floor = np.asarray(other_law.predict(**at_floor)[0], float) if floor_p else None
    curve = np.asarray(other_law.predict(n_params=grid, n_tokens=tokens_per_param * grid, ratio=ones)[0], float)
    curve = floored(curve[None, :], grid, point_floor)[0]
    log_p_other, reached, at_start = crossing(log_grid, curve[None, :], np.array([target]))
    reachable = bool(reached[0] and not at_start[0])
    p_other = float(np.exp(log_p_other[0])) if reached[0] else float(grid[-1])
    if reachable:  # refine the point estimate inside its grid cell: two rounds of 33 points
        i = int(np.searchsorted(log_grid, log_p_other[0]))
        lo, hi = log_grid[max(i - 1, 0)], log_grid[min(i, GRID - 1)]
        for _ in range(2):
            fine = np.linspace(lo, hi, 33)
            pf = np.exp(fine)
            vals = np.asarray(other_law.predict(n_params=pf, n_tokens=tokens_per_param * pf,
                                                ratio=np.full(33, float(ratio)))[0], float)
            vals = floored(vals[None, :], pf, point_floor)[0]
            lp, hit, _ = crossing(fine, vals[None, :], np.array([target]))
            if not hit[0]:
                break
            j = int(np.clip(np.searchsorted(fine, lp[0]), 1, 32))
            lo, hi = fine[j - 1], fine[j]
            p_other = float(np.exp(lp[0]))
    def fractions(p_ref, p_oth):
        c_ref = family_flops(p_ref, ratio, tokens_per_param, vocab_size, seq_len, convention)
        c_oth = family_flops(p_oth, ratio, tokens_per_param, vocab_size, seq_len, convention)
        return 1.0 - c_ref / c_oth, c_ref, c_oth

    frac, c_ref, c_oth = fractions(np.array([p]), np.array([p_other]))
    frac_6nd = 1.0 - (p / p_other) ** 2

    low = high = float("nan")
    n_samples = 0
    ref_s = np.asarray(reference_law.predict_samples(
        n_params=np.array([p]), n_tokens=np.array([tokens_per_param * p]), ratio=np.array([float(ratio)])), float)
    oth_s = np.asarray(other_law.predict_samples(n_params=grid, n_tokens=tokens_per_param * grid, ratio=ones), float)
    if floor_p is not None and oth_s.ndim == 2:
        oth_s = floored(oth_s, grid, np.asarray(other_law.predict_samples(**at_floor), float)[:, 0])
    if ref_s.ndim == 2 and oth_s.ndim == 2 and ref_s.shape[0] and oth_s.shape[0]:
        b = min(ref_s.shape[0], oth_s.shape[0])
        ref_t, oth_c = ref_s[:b, 0], oth_s[:b]
        ok = np.isfinite(ref_t) & np.isfinite(oth_c).all(axis=1)
        if ok.sum() >= 2:
            lp, hit, _ = crossing(log_grid, oth_c[ok], ref_t[ok])
            p_oth_b = np.where(hit, np.exp(np.minimum(lp, log_grid[-1])), grid[-1])
            f_b, _, _ = fractions(np.full(p_oth_b.shape, p), p_oth_b)
            tail = (1.0 - level) / 2.0 * 100.0
            low, high = (float(v) for v in np.percentile(f_b, [tail, 100.0 - tail]))
            n_samples = int(ok.sum())
            # the point is the median over the samples (the fraction grows with P'), so it lies
            # inside its interval however skewed the samples are far from the data
            p_other = float(np.exp(np.median(np.log(p_oth_b))))
            frac, c_ref, c_oth = fractions(np.array([p]), np.array([p_other]))
            frac_6nd = 1.0 - (p / p_other) ** 2
    return Savings(
        reference=reference, other=other, ratio=float(ratio), n_params=p,
        tokens_per_param=float(tokens_per_param), target_loss=target, n_params_other=p_other,
        flops_reference=float(c_ref[0]), flops_other=float(c_oth[0]), fraction=float(frac[0]),
        low=low, high=high, level=level, fraction_6nd=float(frac_6nd), convention=convention,
        reachable=reachable, n_samples=n_samples,
    )
