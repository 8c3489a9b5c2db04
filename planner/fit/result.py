"""The record of one fitted law: :class:`FitResult` (values, uncertainty, fit statistics,
held-out error, warnings, prediction with intervals, plain-JSON round trip).

Modelled on what statsmodels/lmfit results record: a reader can tell from the result alone how
the numbers were obtained (``meta``: law form, groups, FLOP convention, bootstrap kind, ...)
and whether to trust them (``warnings``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.errors import CpPlanError
from planner.plainjson import plain

JSON_FORMAT = "cp-plan-fit/1"


def _num(x) -> float:
    """JSON null -> NaN; anything numeric -> float."""
    return float("nan") if x is None else float(x)





# Law objects by name, filled by planner.fitter (the registry on top): results evaluate through the
# law that made them without this module importing the fitters (imports point one way).
_LAWS: dict = {}


def register_law(law) -> None:
    """Make ``law`` (an object with ``name``, ``predict_values`` and ``parametric_samples``)
    available to results that name it."""
    _LAWS[law.name] = law


@dataclass(frozen=True)
class FitResult:
    """A fitted law. Parameter dictionaries are keyed by ``names`` (in that order).

    ``stderr``/``ci_low``/``ci_high``/``cov`` come from the bootstrap when ``samples`` is set
    (percentile intervals at ``level``), else from the asymptotic covariance with Wald
    intervals; ``meta['interval_method']`` says which. ``heldout_error`` is the RMS error in
    log-loss (≈ relative error) of a refit without the largest scale, predicting that scale
    (NaN when there are too few scales; ``meta['heldout']`` says why).
    """

    law: str
    names: tuple[str, ...]
    values: dict[str, float]
    stderr: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    cov: np.ndarray
    n: int  # points the fit used
    n_free: int  # parameters estimated from the data (fixed ones excluded)
    objective: float
    residuals: dict[str, float]  # stats of ln(observed) − ln(predicted)
    aic: float
    bic: float
    heldout_error: float
    warnings: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    samples: np.ndarray | None = None  # (B, len(names)) bootstrap refits
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(set(names)) != len(names) or not names:
            raise CpPlanError(f"FitResult names {names!r} must be non-empty and unique")
        for label in ("values", "stderr", "ci_low", "ci_high"):
            d = getattr(self, label)
            if set(d) != set(names):
                raise CpPlanError(f"FitResult.{label} has keys {sorted(d)}, expected {list(names)}")
            object.__setattr__(self, label, {k: float(d[k]) for k in names})
        cov = np.asarray(self.cov, dtype=float)
        if cov.shape != (len(names), len(names)):
            raise CpPlanError(f"FitResult.cov has shape {cov.shape}, expected {(len(names),) * 2}")
        object.__setattr__(self, "cov", cov)
        if self.samples is not None:
            s = np.asarray(self.samples, dtype=float)
            if s.ndim != 2 or s.shape[1] != len(names):
                raise CpPlanError(f"FitResult.samples has shape {s.shape}, expected (B, {len(names)})")
            object.__setattr__(self, "samples", s)
        if not 0 < self.level < 1:
            raise CpPlanError(f"FitResult.level={self.level} must be in (0, 1)")
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    # ------------------------------------------------------------------ prediction

    def _law(self):
        if self.law not in _LAWS:
            known = ", ".join(_LAWS) or "none (import planner.fitter, which registers them)"
            raise CpPlanError(f"unknown law {self.law!r} in a fit result; known: {known}")
        return _LAWS[self.law]

    def _value_matrix(self) -> np.ndarray:
        return np.array([[self.values[k] for k in self.names]])

    def predict_samples(self, **inputs) -> np.ndarray:
        """One prediction per bootstrap refit, shape (B, n), for inputs given by column name
        (e.g. ``n_params=, n_tokens=`` for ``chinchilla``; ``ratio=`` or ``n_embd=, n_layer=``
        for ``shape``; ``flops=`` for ``compute`` and ``isoflop``). Without bootstrap refits the
        rows are draws from the asymptotic normal distribution of the internal parameters
        (seeded with the fit's seed), so the call is deterministic either way."""
        law = self._law()
        if self.samples is not None and len(self.samples):
            v = self.samples
        else:
            v = law.parametric_samples(self, 1000)
        return law.predict_values(v, self.meta, inputs)

    def predict(self, level: float | None = None, **inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, low, high) arrays: the point prediction and a ``level`` interval (default the
        fit's) from the percentiles of :meth:`predict_samples`: parameter uncertainty only, not
        run-to-run noise."""
        level = self.level if level is None else float(level)
        if not 0 < level < 1:
            raise CpPlanError(f"level={level} must be in (0, 1), e.g. 0.95")
        law = self._law()
        mean = law.predict_values(self._value_matrix(), self.meta, inputs)[0]
        samples = self.predict_samples(**inputs)
        tail = (1 - level) / 2 * 100
        with np.errstate(all="ignore"):
            ok = np.isfinite(samples)
            if ok.all():
                low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
            else:
                low, high = np.nanpercentile(np.where(ok, samples, np.nan), [tail, 100 - tail], axis=0)
        return mean, np.asarray(low, float), np.asarray(high, float)

    # ------------------------------------------------------------------ presentation

    def rows(self) -> list[dict]:
        """One dict per parameter: name, value, stderr, ci_low, ci_high (for tables)."""
        return [dict(name=k, value=self.values[k], stderr=self.stderr[k], ci_low=self.ci_low[k],
                     ci_high=self.ci_high[k]) for k in self.names]

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict:
        """Plain JSON (dicts, lists, numbers, strings, null for NaN); :meth:`from_json` inverts it."""
        return plain({
            "format": JSON_FORMAT,
            "law": self.law,
            "names": list(self.names),
            "values": self.values,
            "stderr": self.stderr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "cov": self.cov,
            "n": self.n,
            "n_free": self.n_free,
            "objective": self.objective,
            "residuals": self.residuals,
            "aic": self.aic,
            "bic": self.bic,
            "heldout_error": self.heldout_error,
            "warnings": list(self.warnings),
            "meta": self.meta,
            "samples": None if self.samples is None else self.samples,
            "seed": self.seed,
            "level": self.level,
        })

    @classmethod
    def from_json(cls, d: dict) -> "FitResult":
        """Rebuild a result written by :meth:`to_json`."""
        if not isinstance(d, dict):
            raise CpPlanError(f"a fit result must be a JSON object, not {type(d).__name__}")
        fmt = d.get("format")
        if fmt != JSON_FORMAT:
            raise CpPlanError(f"fit result format {fmt!r} is not {JSON_FORMAT!r}; refit with `cp-plan fit`")
        missing = [k for k in ("law", "names", "values", "stderr", "ci_low", "ci_high", "cov", "n")
                   if k not in d]
        if missing:
            raise CpPlanError(f"fit result lacks {', '.join(missing)}; refit with `cp-plan fit`")
        names = tuple(d["names"])

        def pdict(key):
            return {k: _num((d.get(key) or {}).get(k)) for k in names}

        cov = np.array([[_num(v) for v in row] for row in d["cov"]], dtype=float).reshape(len(names), len(names))
        samples = d.get("samples")
        if samples is not None:
            samples = np.array([[_num(v) for v in row] for row in samples], dtype=float).reshape(-1, len(names))
        return cls(
            law=str(d["law"]), names=names, values=pdict("values"), stderr=pdict("stderr"),
            ci_low=pdict("ci_low"), ci_high=pdict("ci_high"), cov=cov, n=int(d["n"]),
            n_free=int(d.get("n_free", len(names))), objective=_num(d.get("objective")),
            residuals={k: _num(v) for k, v in (d.get("residuals") or {}).items()},
            aic=_num(d.get("aic")), bic=_num(d.get("bic")), heldout_error=_num(d.get("heldout_error")),
            warnings=tuple(d.get("warnings") or ()), meta=dict(d.get("meta") or {}),
            samples=samples, seed=int(d.get("seed", 0)), level=float(d.get("level", 0.95)),
        )
