"""`cp-plan fit`: fit a scaling law to the finished runs (planner.fitter)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import bootstrap_checked, DbOpt, emit_json, fmt_cell, plural, where_terms, WhereOpt
from planner.errors import CpPlanError

# ---------------------------------------------------------------- fit (planner.fitter)
# (fit command goes here)
class LawName(str, Enum):
    chinchilla = "chinchilla"
    compute = "compute"
    shape = "shape"
    isoflop = "isoflop"


def fit(
    law: Annotated[LawName, typer.Option("--law", help="chinchilla: L = E + A/N^α + B/D^β; compute: L = E + A·C^(−a) "
                                         "per parameterization and N:L; shape: loss over P, D and N:L per "
                                         "parameterization; isoflop: N* ∝ C^a from IsoFLOP profiles.")],
    where: WhereOpt = None,
    exclude_highest_loss: Annotated[int, typer.Option("--exclude-highest-loss", min=0, help="Drop the K highest-loss runs of each group first (Epoch drop 5 of Chinchilla's).")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=bootstrap_checked, help="Bootstrap refits for standard errors and percentile intervals (0: asymptotic, Wald).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed (fits are deterministic given it).")] = 0,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables (bootstrap samples left out; --out keeps them).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the fitted laws, bootstrap samples included, to this JSON file (usable as `recommend --laws`).")] = None,
    pool_shapes: Annotated[bool, typer.Option("--pool-shapes", help="compute only: one law per parameterization through the lowest loss at each budget over all its N:L shapes, instead of one per N:L family.")] = False,
    joint: Annotated[Optional[bool], typer.Option("--joint/--separate", help="shape only: one joint law across parameterizations (shared E and exponent, multiplicative N:L penalty; default when 2+ parameterizations) or one law per parameterization.")] = None,
) -> None:
    """Fit a scaling law to the finished runs in the database, per parameterization (and per N:L for compute)."""
    from planner.db import RunDB
    from planner.fitter import fit_runs
    from planner.tableio import format_where

    if pool_shapes and law is not LawName.compute:
        raise CpPlanError(f"--pool-shapes applies to --law compute only, not {law.value}; leave it out")
    if not 0 <= seed < 2 ** 32:
        raise CpPlanError(f"--seed {seed} must be an integer in [0, 2^32), e.g. --seed 0")
    run_db = RunDB(db, create=False)
    where_d = where_terms(where)
    df = run_db.runs(where=where_d)
    matching = " matching --where" if where_d else ""
    if len(df) < 2:
        raise CpPlanError(
            f"{'no' if len(df) == 0 else 'only 1'} finished run{'' if len(df) == 1 else 's'}{matching} in {run_db.display}; "
            f"a {law.value} law needs several: train some (`cp-plan sweep shape ...`), import published ones "
            "(`cp-plan runs import ...`), or loosen --where")
    notes = []
    if law is LawName.shape:
        from planner.lawcache import shape_frame

        df, dropped = shape_frame(df)  # the same runs the planner's laws use
        notes += [f"left out {n} run(s): {why}" for why, n in dropped.items()]
    busy = None
    if sys.stderr.isatty():
        from rich.console import Console

        busy = Console(stderr=True).status(f"fitting the {law.value} law to {len(df)} runs (bootstrap {bootstrap}) ...")
        busy.start()
    try:
        results, skipped = fit_runs(law.value, df, bootstrap=bootstrap, seed=seed, joint=joint,
                                    split_ratio=not pool_shapes, exclude_highest_loss=exclude_highest_loss)
    finally:
        if busy is not None:
            busy.stop()
    payload = {"law": law.value, "db": run_db.display, "where": format_where(where_d), "bootstrap": bootstrap, "seed": seed,
               "laws": {k: r.to_json() for k, r in results.items()}, "skipped": skipped, "notes": notes}
    if out is not None:
        from planner.fileio import write_atomic

        write_atomic(out, json.dumps(payload, indent=1, allow_nan=False) + "\n")  # full disk: old file kept
    if json_out:
        for entry in payload["laws"].values():
            samples = entry.pop("samples", None)
            entry["n_samples"] = 0 if samples is None else len(samples)
        emit_json(payload)
        return
    _print_fits(law.value, results, skipped, notes, out)


def _print_fits(law: str, results: dict, skipped: dict, notes: list, out) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    for key, res in results.items():
        boot = res.meta.get("bootstrap", {}).get("n_used", 0)
        how = f"bootstrap {boot}, percentile" if boot else "asymptotic, Wald"
        pct = f"{res.level:.0%}"
        title = f"{law} law — {key}: {plural(res.n, 'point')}" + (f", form {res.meta['form']}" if law == "shape" else "")
        table = Table(title=title, caption=f"intervals: {how}")
        for col in ("parameter", "value", "SE", f"{pct} low", f"{pct} high"):
            table.add_column(col, justify="left" if col == "parameter" else "right")
        for row in res.rows():
            table.add_row(row["name"], f"{row['value']:.5g}", fmt_cell(row["stderr"]),
                          fmt_cell(row["ci_low"]), fmt_cell(row["ci_high"]))
        console.print(table)
        held = res.heldout_error
        console.print(f"  residual RMS {res.residuals.get('rms', float('nan')):.3g} in log loss   AIC {res.aic:.4g}   "
                      f"BIC {res.bic:.4g}   held-out error "
                      + (f"{held:.3g}: {res.meta.get('heldout', {}).get('note', '')}" if math.isfinite(held)
                         else f"not computed: {res.meta.get('heldout', {}).get('note', 'no held-out fit')}"))
        if law == "shape" and "selection" in res.meta:
            sel = res.meta["selection"]
            errs = ", ".join(f"{k} {v:.3g}" for k, v in sel["errors"].items())
            console.print(f"  form chosen by {sel['by']}: {errs}")
        for w in res.warnings:
            console.print(f"  [yellow]warning:[/yellow] {w}", highlight=False)
    for key, why in skipped.items():
        console.print(f"[yellow]skipped {key}:[/yellow] {why}", highlight=False)
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    if out is not None:
        console.print(f"wrote {out}")


