"""`cp-plan report` and `cp-plan reproduce`: the HTML report and the paper's experiments (reports, trainer.reproduce)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import math
import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (
    BandCriterionOpt, bootstrap_checked, ConfidenceOpt, DbOpt, emit_json, fit_progress, JsonOpt,
    MaxOverheadOpt, need_torch, ToleranceOpt, WorkersOpt,
)
from planner.errors import CpPlanError

# ---------------------------------------------------------------- report (reports)
# (report and reproduce commands go here)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (self-contained: plotly.js inlined, opens offline).")] = Path("report.html"),
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Shape-laws file (`cp-plan fit --law shape --out`); default: the database's cached laws, refitted when it changed.")] = None,
    params: Annotated[Optional[float], typer.Option("--params", help="Include the plan for this many non-embedding parameters (with --hardware).")] = None,
    hardware: Annotated[Optional[str], typer.Option("--hardware", help="Hardware profile of the plan: flat, weight-streaming, gpu, latency, memory or a .toml/.json file.")] = None,
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law plans the shape.")] = "completep",
    band_criterion: BandCriterionOpt = "compute",
    max_overhead: MaxOverheadOpt = 0.2,
    tolerance: ToleranceOpt = 0.01,
    confidence: ConfidenceOpt = 0.9,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=bootstrap_checked, help="Bootstrap refits when the shape laws must be (re)fitted (seeded).")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Write the HTML report: loss vs N:L, frontiers, FLOP savings, LR transfer, coordinate checks, plan, runs."""
    from planner.db import RunDB
    from planner.hardware import load_profile
    from planner.lawcache import load_laws
    from planner.recommend import Target, make_plan

    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise CpPlanError(f"--tolerance {tolerance} must be a relative loss in [0, 1), e.g. 0.01 for 1%")
    if (params is None) != (hardware is None):
        raise CpPlanError("the plan table needs both --params and --hardware (e.g. --params 1.5e9 "
                          "--hardware weight-streaming); give both or neither")
    target = Target(n_params=params, parameterization=parameterization, band_criterion=band_criterion.strip().lower(),
                    max_overhead=max_overhead, tolerance=tolerance, confidence=confidence) if params is not None else None
    profile = load_profile(hardware) if hardware is not None else None
    run_db = RunDB(db, create=False)
    notes: list[str] = []
    try:
        lawset = load_laws(db=db, laws_path=laws, bootstrap=bootstrap,
                           on_fit=fit_progress)
        notes += lawset.notes
    except CpPlanError as exc:
        if laws is not None:  # an explicit laws file that cannot be read is the user's error
            raise
        lawset = None
        notes.append(f"no shape laws: {exc}")
    plan = None
    if target is not None:
        if lawset is None:
            notes.append("no plan: it needs shape laws (see above)")
        else:
            try:
                plan = make_plan(target, profile, lawset.laws, lawset.context, lawset.meta)
            except CpPlanError as exc:
                notes.append(f"no plan: {exc}")
    from reports.build import build_report
    from reports.page import sections_present, write_report

    page = build_report(run_db, lawset, plan, tolerance=tolerance, notes=notes)
    path = write_report(out, page)
    present = sections_present(page)
    if json_out:
        emit_json({"out": str(path), "bytes": len(page.encode()), "sections": present, "notes": notes})
        return
    for note in notes:
        typer.echo(f"cp-plan: note: {note}", err=True)
    shown = [k for k, v in present.items() if v]
    missing = [k for k, v in present.items() if not v]
    typer.echo(f"wrote {path} ({len(page.encode()) / 1e6:.1f} MB, opens offline): "
               f"{', '.join(shown) or 'no sections with data'}"
               + (f"; no data yet for {', '.join(missing)}" if missing else ""))


def reproduce(
    scale: Annotated[str, typer.Option("--scale", help="tiny (a minute), cpu (english corpus, ~7 CPU-hours; build it into its own --db), cpu-kjv (the shipped database) or gpu.")] = "cpu",
    workers: WorkersOpt = 2,
    only: Annotated[Optional[str], typer.Option("--only", help="Comma list of steps: shape,lr,coord (the base-LR scan always runs).")] = None,
    report_dir: Annotated[Optional[str], typer.Option("--report-dir", help="Where the HTML report and markdown summary go (default: reports/ for the default database, else reports/<database name>/).")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="Train nothing; refit the laws and rewrite the report and summary.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Train nothing; print the plan per step: runs, runs done, tokens, estimated CPU-hours left.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the paper's experiments at a scale (resumable), then fit the laws and write the report."""
    from planner.db import RunDB
    from trainer.reproduce import get_scale, run_reproduction

    steps = tuple(s.strip() for s in only.split(",")) if only else None
    if steps and not set(steps) <= {"shape", "lr", "coord"}:
        raise CpPlanError(f"--only {only!r}: steps are shape, lr, coord")
    if dry_run:
        from trainer.reproduce import dry_run as plan_of

        db_arg = db or os.environ.get("CP_PLAN_DB")
        from planner.db import DEFAULT_DB_PATH

        exists = bool(db_arg and "://" in db_arg) or Path(db_arg or DEFAULT_DB_PATH).is_file()
        plan = plan_of(get_scale(scale), RunDB(db, create=False) if exists else None)
        if json_out:
            emit_json(plan)
            return
        for name, st in {**plan["steps"], "total": plan["total"]}.items():
            typer.echo(f"{name:18s} {st['runs']:4d} runs, {st['done']:4d} done, {st['n_tokens']:.3g} tokens, "
                       f"{st['cpu_hours']:.2f} CPU-h planned, {st['cpu_hours_left']:.2f} left")
        typer.echo("(estimate: 1 thread per run on this project's 2-core machine; bracketing adds shapes, "
                   "coordinate checks take minutes)")
        return
    need_torch()
    run_db = RunDB(db)
    if report_dir is None:
        report_dir = _default_report_dir(db)
    summary = {}
    if not report_only:
        summary = run_reproduction(get_scale(scale), run_db, workers, steps,
                                   log=lambda m: typer.echo(m, err=True))
    summary["written"] = _write_reproduction_reports(run_db, db, Path(report_dir))
    if json_out:
        emit_json(summary)
    else:
        if "base_lr" in summary:
            typer.echo(f"reproduction at scale {scale} done: η_base = {summary['base_lr']:g}")
        typer.echo("wrote " + ", ".join(summary["written"]))


def _default_report_dir(db: Optional[str]) -> str:
    """reports/ for the default database; reports/<name>/ for another, so building a new database
    (e.g. --db data/runs/cpu-english.sqlite) never overwrites the shipped report."""
    from planner.db import DEFAULT_DB_PATH

    db_arg = db or os.environ.get("CP_PLAN_DB")
    if not db_arg or ("://" not in db_arg and Path(db_arg).resolve() == DEFAULT_DB_PATH.resolve()):
        return "reports"
    name = Path(db_arg.split("?")[0].rstrip("/")).stem or "db"
    return str(Path("reports") / re.sub(r"[^A-Za-z0-9._-]", "_", name))


def _write_reproduction_reports(run_db, db: Optional[str], out_dir: Path) -> list[str]:
    """Fit (or load cached) shape laws, plan 1.5B for weight-streaming and latency, and write
    the HTML report and the markdown summary side by side."""
    from planner.lawcache import load_laws
    from planner.recommend import Target, make_plan
    from reports.build import build_report
    from reports.page import write_report
    from reports.summary import build_summary, plans_markdown

    notes: list[str] = []
    try:
        lawset = load_laws(db=db, on_fit=lambda m: typer.echo(m, err=True))
    except CpPlanError as exc:
        lawset, notes = None, [f"no shape laws: {exc}"]
    plans = {}
    if lawset is not None:
        for hw in ("weight-streaming", "latency"):
            try:
                plans[hw] = make_plan(Target(n_params=1.5e9), hw, lawset.laws, lawset.context, lawset.meta)
            except CpPlanError as exc:
                notes.append(f"no {hw} plan: {exc}")
    out_dir.mkdir(parents=True, exist_ok=True)
    html = write_report(out_dir / "reproduction.html",
                        build_report(run_db, lawset, plans.get("weight-streaming"), notes=notes))
    text = build_summary(run_db, lawset) + plans_markdown(plans)
    md = out_dir / "REPRODUCTION.md"
    from planner.fileio import write_atomic

    write_atomic(md, text)
    return [str(html), str(md)]



