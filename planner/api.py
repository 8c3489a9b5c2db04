"""cp-plan from Python (a notebook, a script): the functions the CLI itself is built on.

    from planner import api
    runs = api.open_runs("data/runs/runs.sqlite")          # RunTable: .to_frame(), len(runs)
    laws = api.fit_laws("data/runs/runs.sqlite")           # Laws: cached beside the database
    plan = api.recommend(1.5e9, hardware="weight-streaming", laws=laws)
    plan.n_embd, plan.n_layer, plan.savings_frame()       # the shape, savings as a DataFrame
    api.predict(2048, 24, laws=laws).interval             # the laws' loss for one configuration

Every result has ``to_dict()`` (the plain JSON `cp-plan ... --json` prints) and, where a table
fits, ``to_frame()``; a plan shows itself as HTML in a notebook (``_repr_html_``) and as the
one-screen text of `cp-plan recommend` when printed. Errors are :class:`planner.errors.CpPlanError`
with the same one-line messages as the CLI. No torch and no plotly are imported.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.errors import CpPlanError

__all__ = ["RunTable", "Laws", "PlanResult", "Prediction", "open_runs", "fit_laws", "recommend", "predict"]


@dataclass(frozen=True)
class RunTable:
    """Runs of a database (``open_runs``): a pandas DataFrame with one row per run."""

    frame: Any
    db: str

    def __len__(self) -> int:
        return len(self.frame)

    def to_frame(self):
        return self.frame.copy()

    def to_dict(self) -> dict:
        from planner.tableio import records_for_json

        return {"db": self.db, "runs": records_for_json(self.frame)}


@dataclass(frozen=True)
class Laws:
    """Fitted laws (``fit_laws``): per parameterization, with the context of their runs."""

    lawset: Any  # planner.lawcache.LawSet

    @property
    def parameterizations(self) -> list[str]:
        return sorted(self.lawset.laws)

    def to_dict(self) -> dict:
        return {"parameterizations": self.parameterizations, "meta": self.lawset.meta,
                "context": self.lawset.context, "notes": list(self.lawset.notes)}

    def to_frame(self):
        import pandas as pd

        rows = []
        for k in self.parameterizations:
            law, ctx = self.lawset.laws[k], self.lawset.context.get(k) or {}
            rows.append({"parameterization": k, "form": (getattr(law, "meta", {}) or {}).get("form"),
                         "n_runs": ctx.get("n_runs"), "max_n_params": ctx.get("max_n_params"),
                         "ratio_min": ctx.get("ratio_min"), "ratio_max": ctx.get("ratio_max")})
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class PlanResult:
    """A recommendation (``recommend``); ``plan`` is ``planner.recommend.Plan.to_dict()``."""

    plan: dict = field(repr=False)

    def __getattr__(self, name: str):
        plan = self.__dict__.get("plan") or {}
        if name in plan:
            return plan[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return self.plan

    def savings_frame(self):
        import pandas as pd

        return pd.DataFrame([{"versus": k, "fraction": s["fraction"], "low": s["low"], "high": s["high"],
                              "significant": s.get("significant"), "reachable": s.get("reachable")}
                             for k, s in self.plan["savings"].items()])

    def hparams_frame(self):
        import pandas as pd

        hp = self.plan.get("hparams")
        return pd.DataFrame(list(hp["groups"].values())) if hp else pd.DataFrame()

    to_frame = savings_frame

    def lines(self) -> list[str]:
        from planner.brief import plan_brief

        return plan_brief(self.plan, command="planner.api: PlanResult.to_dict() for every field")

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


@dataclass(frozen=True)
class Prediction:
    """The laws' loss for one configuration (``predict``)."""

    parameterization: str
    n_embd: int
    n_layer: int
    ratio: float
    n_params: float
    n_tokens: float
    loss: float
    interval: list
    run_interval: list | None
    level: float
    unit: str
    extrapolation: dict
    interval_note: str

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def open_runs(db: str | None = None, statuses=("done",), where: dict | None = None) -> RunTable:
    """The runs of a run database (SQLite path or SQLAlchemy URL; default the project's)."""
    from planner.db import RunDB

    run_db = RunDB(db, create=False)
    try:
        return RunTable(run_db.runs(where=where, statuses=statuses), run_db.display)
    finally:
        run_db.close()


def fit_laws(db: str | None = None, *, laws_file: str | None = None, bootstrap: int = 200, seed: int = 0,
             refit: bool = False, on_fit=None) -> Laws:
    """The planner's laws from a run database (through its cache) or from a laws file."""
    from planner.lawcache import load_laws

    from planner.fitter import check_bootstrap

    check_bootstrap(bootstrap)
    return Laws(load_laws(db=db, laws_path=laws_file, bootstrap=bootstrap, seed=seed, refit=refit, on_fit=on_fit))


def _laws(laws: Laws | None, db: str | None) -> Laws:
    return laws if laws is not None else fit_laws(db)


def recommend(params: float | None = None, *, flops: float | None = None, hardware: Any = "flat",
              laws: Laws | None = None, db: str | None = None, **target: Any) -> PlanResult:
    """A plan for ``params`` non-embedding parameters (or a ``flops`` budget; 1.5e9 when neither)
    on ``hardware`` (a profile name, file or ``HardwareProfile``). ``target`` takes the other
    fields of :class:`planner.recommend.Target` (tokens_per_param, parameterization,
    band_criterion, max_overhead, tolerance, confidence, vocab_size, seq_len, d_head)."""
    from planner.hardware import load_profile
    from planner.recommend import Target, make_plan

    defaulted = params is None and flops is None
    t = Target(n_params=1.5e9 if defaulted else params, flops=flops, **target)
    profile = load_profile(hardware)
    lawset = _laws(laws, db).lawset
    plan = make_plan(t, profile, lawset.laws, lawset.context, lawset.meta).to_dict()
    if defaulted:
        plan["assumptions"]["target_default"] = ("no --params or --flops: planned 1.5e9 non-embedding params "
                                                 "(the paper's headline scale)")
    return PlanResult(plan)


def predict(n_embd: int, n_layer: int, *, n_params: float | None = None, n_tokens: float | None = None,
            parameterization: str = "completep", laws: Laws | None = None, db: str | None = None) -> Prediction:
    """The laws' expected loss of one configuration with its interval (and one run's, with seed
    noise), its unit and how far it lies beyond the runs."""
    from planner.assumptions import loss_unit
    from planner.recommend import MAX_N_PARAMS, law_key_for
    from planner.shapes import n_params_nonembedding

    for flag, v in (("--n-embd", n_embd), ("--n-layer", n_layer)):
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
            raise CpPlanError(f"{flag} {v} must be a positive integer, e.g. {flag} {2048 if flag == '--n-embd' else 24}")
    exact = n_params_nonembedding(int(n_embd), int(n_layer))
    if exact > MAX_N_PARAMS:
        raise CpPlanError(f"n_embd {n_embd}, n_layer {n_layer} is {exact:.3g} non-embedding parameters, beyond the "
                          f"{MAX_N_PARAMS:.0e} any plan covers; give a model's real shape")
    params = float(exact) if n_params is None else n_params
    if not (math.isfinite(params) and params > 0):
        raise CpPlanError(f"--params {params:g} must be a positive number, e.g. --params {exact:.3g}")
    if abs(params / exact - 1) > 0.1:
        raise CpPlanError(f"--params {params:.4g} does not match n_embd {n_embd}, n_layer {n_layer} "
                          f"({exact:,} non-embedding parameters); leave --params out or fix the shape")
    if n_tokens is None:
        n_tokens = 20.0 * params
    elif not (math.isfinite(n_tokens) and 0 < n_tokens <= 1e30):
        raise CpPlanError(f"--n-tokens {n_tokens:g} must be a positive number, e.g. --n-tokens {20 * params:.3g}")
    lawset = _laws(laws, db).lawset
    key = parameterization if parameterization in lawset.laws else law_key_for(parameterization)
    if key not in lawset.laws:
        raise CpPlanError(f"no law for parameterization {parameterization!r}; laws exist for "
                          f"{', '.join(sorted(lawset.laws))}: pass one of them with -p")
    law = lawset.laws[key]
    inputs = dict(n_params=np.array([params]), n_tokens=np.array([n_tokens]), ratio=np.array([n_embd / n_layer]))
    mean, low, high = (float(v[0]) for v in law.predict(**inputs))
    run = law.predict_run(**inputs) if hasattr(law, "predict_run") else None
    ctx = lawset.context.get(key) or {}
    largest_p, largest_d = ctx.get("max_n_params"), ctx.get("max_n_tokens")
    return Prediction(
        parameterization=key, n_embd=int(n_embd), n_layer=int(n_layer), ratio=n_embd / n_layer,
        n_params=params, n_tokens=n_tokens, loss=mean, interval=[low, high],
        run_interval=[float(run[1][0]), float(run[2][0])] if run is not None else None,
        level=getattr(law, "level", 0.95),
        unit=loss_unit(ctx) if ctx else "unknown (the laws carry no run context)",
        extrapolation={"n_params": params / largest_p if largest_p else None,
                       "n_tokens": n_tokens / largest_d if largest_d else None},
        interval_note="interval: the laws' uncertainty (bootstrap refits, shape-law forms, gap forms); "
                      "run_interval adds the seed-to-seed noise of one training run")
