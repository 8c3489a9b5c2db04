"""`cp-plan hparams`, `recommend`, `predict` and `next`: what the planner answers (planner.rules, planner.api)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import (
    BandCriterionOpt, BaseShape, bootstrap_checked, ConfidenceOpt, DbOpt, emit_json, fit_progress, JsonOpt,
    MaxOverheadOpt, plural, ToleranceOpt, with_base_shape_options,
)
from planner.errors import CpPlanError

# ---------------------------------------------------------------- hparams (planner.rules)


class ParamName(str, Enum):
    sp = "sp"
    mup = "mup"
    completep = "completep"
    alpha05 = "alpha0.5"
    depth_alpha = "depth-alpha"


@with_base_shape_options
def hparams(
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="sp, mup, completep, alpha0.5 or depth-alpha (with --alpha).")],
    n_embd: Annotated[int, typer.Option(help="Target width N.")],
    n_layer: Annotated[int, typer.Option(help="Target depth L (transformer blocks).")],
    base: BaseShape = None,
    alpha: Annotated[Optional[float], typer.Option(help="Depth exponent α in [0.5, 1] for depth-alpha.")] = None,
    d_head: Annotated[int, typer.Option(help="Head size (fixed as width grows).")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Print the per-group hyperparameters a shape gets under a parameterization."""
    from planner.rules import resolve_shape
    from planner.shapes import check_width

    check_width(n_embd, d_head)
    check_width(base.base_n_embd, d_head)
    rules = resolve_shape(parameterization, n_embd, n_layer, base.base_n_embd, base.base_n_layer, base.hparams(), alpha)
    out = rules.to_dict()
    out.update(n_embd=n_embd, n_layer=n_layer, base_n_embd=base.base_n_embd, base_n_layer=base.base_n_layer,
               d_head=d_head, n_head=n_embd // d_head, attn_scale=rules.attn_scale(d_head))
    if json_out:
        emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{rules.parameterization}"
                  + (f" (α = {rules.alpha:g})" if rules.alpha is not None else "")
                  + f": N={n_embd} L={n_layer}, m_N={rules.width_mult:g}, m_L={rules.depth_mult:g}")
    for col in ("group", "init", "init std", "peak LR", "LR mult", "weight decay", "AdamW ε"):
        table.add_column(col, no_wrap=True)
    for g in rules.groups.values():
        table.add_row(g.group, g.init, "—" if g.init_std is None else f"{g.init_std:.4g}",
                      f"{g.lr:.4g}", f"{g.lr_mult:.4g}", f"{g.weight_decay:.4g}", f"{g.eps:.4g}")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(f"residual branch multiplier: {rules.residual_mult:.4g}   "
                  f"logit multiplier: {rules.output_mult:.4g}   embedding multiplier: {rules.input_mult:.4g}   "
                  f"attention scale: {rules.attn_scale_kind} = {rules.attn_scale(d_head):.4g}")


# ---------------------------------------------------------------- recommend (planner.recommend)
# (recommend command goes here)
ExportOpt = Annotated[Optional[str], typer.Option(
    "--export", metavar="FORMAT",
    help="Also write the plan as a training config: nanogpt-mup (Python config), megatron "
         "(command-line arguments), torchtitan (TOML job file) or json (the whole plan); to --out, "
         "else to stdout instead of the table.")]
ExportOutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", metavar="FILE", help="File for --export (replaced atomically).")]


def _check_export(fmt: Optional[str], out: Optional[Path], json_out: bool) -> None:
    """Refuse a bad --export/--out combination before any law is fitted."""
    from planner.export import FORMATS

    if fmt is None:
        if out is not None:
            raise CpPlanError(f"--out {out} needs --export FORMAT ({', '.join(FORMATS)})")
        return
    if fmt.strip().lower() not in FORMATS:
        raise CpPlanError(f"unknown --export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out is None and json_out:
        raise CpPlanError("--export without --out prints the file to stdout, which --json also wants; "
                          "give --out FILE")


def _export_plan(plan: dict, fmt: str, out: Optional[Path]) -> bool:
    """Write the plan as ``fmt`` to ``out`` (True: printed to stdout instead, as there is no --out)."""
    from planner.export import render, write_export

    if out is None:
        typer.echo(render(plan, fmt), nl=False)
        return True
    path = write_export(plan, fmt, out)
    typer.echo(f"cp-plan: wrote the plan as {fmt.strip().lower()} to {path}", err=True)
    return False


def recommend(
    params: Annotated[Optional[float], typer.Option("--params", help="Target non-embedding parameters, e.g. 1.5e9 (default 1.5e9 when neither --params nor --flops is given).")] = None,
    flops: Annotated[Optional[float], typer.Option("--flops", help="Training FLOP budget instead of --params (convention 6P+6NV+12LNT per token).")] = None,
    hardware: Annotated[str, typer.Option("--hardware", help="flat, weight-streaming, gpu, latency, memory, or a .toml/.json profile file (fields: planner/hardware.py).")] = "flat",
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law plans the shape: completep, mup, sp, ...")] = "completep",
    band_criterion: BandCriterionOpt = "compute",
    max_overhead: MaxOverheadOpt = 0.2,
    tolerance: ToleranceOpt = 0.01,
    confidence: ConfidenceOpt = 0.9,
    tpp: Annotated[float, typer.Option("--tpp", help="Training tokens per non-embedding parameter.")] = 20.0,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary of the planned model (counts 6NV FLOPs; default GPT-2 BPE).")] = 50257,
    seq_len: Annotated[int, typer.Option(help="Sequence length of the planned model (counts attention FLOPs).")] = 2048,
    d_head: Annotated[Optional[int], typer.Option(help="Head size (default: the hardware profile's, 64 or 128).")] = None,
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Use this laws file instead of fitting from the run database.")] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Refit the laws even if the cache matches the database.")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
    json_out: JsonOpt = False,
    export: ExportOpt = None,
    export_out: ExportOutOpt = None,
    details: Annotated[bool, typer.Option("--details", help="Print the whole plan (band, alternatives, assumptions, every warning) instead of one screen.")] = False,
    curves: Annotated[bool, typer.Option("--curves", help="With --json or --export json: keep the band curves (per-N:L excess, loss and share in the band).")] = False,
) -> None:
    """Recommend width, depth, tokens and per-group hyperparameters for a scale and hardware."""
    from planner import api
    from planner.hardware import load_profile
    from planner.recommend import Target

    settings = dict(tokens_per_param=tpp, parameterization=parameterization,
                    band_criterion=band_criterion.strip().lower(), max_overhead=max_overhead, tolerance=tolerance,
                    confidence=confidence, vocab_size=vocab_size, seq_len=seq_len, d_head=d_head)
    Target(n_params=1.5e9 if params is None and flops is None else params, flops=flops, **settings)  # bad input first
    profile = load_profile(hardware)
    _check_export(export, export_out, json_out)

    lawset = api.fit_laws(db, laws_file=laws, bootstrap=bootstrap, refit=refit, on_fit=fit_progress)
    for note in lawset.lawset.notes:
        typer.echo(f"cp-plan: note: {note}", err=True)
    plan = api.recommend(params, flops=flops, hardware=profile, laws=lawset, **settings).to_dict()
    if not curves:  # hundreds of numbers per parameterization: behind --curves
        for b in plan["band"].values():
            b.pop("curve", None)
    if export is not None and _export_plan(plan, export, export_out):
        return  # the exported file went to stdout instead of the table
    if json_out:
        emit_json(plan)
        return
    if details:
        _print_plan(plan)
        return
    from planner.brief import plan_brief

    rest = " ".join(a for a in sys.argv[1:] if a != "--details") if sys.argv[1:2] == ["recommend"] else "recommend ..."
    for line in plan_brief(plan, command=f"cp-plan {rest} --details"):
        typer.echo(line)


def predict(
    n_embd: Annotated[int, typer.Option("--n-embd", help="Width N of the configuration.")],
    n_layer: Annotated[int, typer.Option("--n-layer", help="Depth L of the configuration.")],
    params: Annotated[Optional[float], typer.Option("--params", help="Non-embedding parameters (default: the exact count of N and L, L·(12N²+13N)+2N; a value more than 10% off it is refused).")] = None,
    n_tokens: Annotated[Optional[float], typer.Option("--n-tokens", help="Training tokens (default: 20 per non-embedding parameter).")] = None,
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law: completep, mup, sp, ...")] = "completep",
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Use this laws file instead of fitting from the run database.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """The laws' loss for one configuration, with its interval, unit and data set."""
    from planner import api

    lawset = api.fit_laws(db, laws_file=laws, bootstrap=bootstrap,
                          on_fit=fit_progress)
    out = api.predict(n_embd, n_layer, n_params=params, n_tokens=n_tokens, parameterization=parameterization,
                      laws=lawset).to_dict()
    key, mean, (low, high) = out["parameterization"], out["loss"], out["interval"]
    params, n_tokens = out["n_params"], out["n_tokens"]
    if json_out:
        emit_json(out)
        return
    x = out["extrapolation"]
    typer.echo(f"{key} N={n_embd} L={n_layer} (N:L {n_embd / n_layer:.3g}), {params:.4g} params, {n_tokens:.4g} tokens: "
               f"loss {mean:.4f} {out['unit']}")
    ri = out["run_interval"]
    typer.echo(f"  {out['level']:.0%} interval [{low:.4f}, {high:.4f}]; "
               + (f"one run [{ri[0]:.4f}, {ri[1]:.4f}]" if ri else "no seed-noise estimate (a laws file without one)"))
    if x["n_params"]:
        typer.echo(f"  {x['n_params']:.3g}x the params and {(x['n_tokens'] or float('nan')):.3g}x the tokens of the "
                   "largest run behind the law")


def next_runs(
    budget_flops: Annotated[float, typer.Option("--budget-flops", help="Training FLOPs to spend on the new runs (convention 6P+6NV+12LNT per token), e.g. 1e15.")],
    params: Annotated[float, typer.Option("--params", help="The plan's target non-embedding parameters.")] = 1.5e9,
    hardware: Annotated[str, typer.Option("--hardware", help="The plan's hardware: flat, weight-streaming, gpu, latency, memory, or a profile file.")] = "flat",
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law plans the shape: completep, mup, sp, ...")] = "completep",
    max_runs: Annotated[int, typer.Option("--max-runs", help="Propose at most this many runs.")] = 24,
    sizes: Annotated[str, typer.Option("--sizes", help="Candidate P as multiples of the largest trained P, comma list.")] = "1,2,4,8,16",
    out: Annotated[Path, typer.Option("--out", help="Where to write the sweep file (run it with `cp-plan sweep file FILE`).")] = Path("next-runs.json"),
    sweep_id: Annotated[Optional[str], typer.Option(help="Sweep name written into the file.")] = None,
    db: DbOpt = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Propose the runs that narrow the plan's intervals most per FLOP, and write them as a sweep file."""
    from planner.db import RunDB
    from planner.fileio import write_atomic
    from planner.hardware import load_profile
    from planner.lawcache import load_laws
    from planner.recommend import Target
    from trainer.sweep import parse_list
    from trainer.sweepfile import plan_next

    if not (math.isfinite(budget_flops) and budget_flops > 0):
        raise CpPlanError(f"--budget-flops {budget_flops:g} must be a positive number of training FLOPs, e.g. 1e15")
    mults = parse_list(sizes, float, "--sizes")
    if any(not (math.isfinite(m) and m > 0) for m in mults):
        raise CpPlanError(f"--sizes {sizes}: every multiple must be positive, e.g. 1,2,4,8")
    target = Target(n_params=params, parameterization=parameterization)
    profile = load_profile(hardware)
    lawset = load_laws(db=db, bootstrap=bootstrap,
                       on_fit=fit_progress)
    run_db = RunDB(db, create=False)
    try:
        proposal, text = plan_next(lawset, run_db, target, profile, budget_flops, max_runs=max_runs,
                                   p_mults=tuple(mults), sweep_id=sweep_id)
    finally:
        run_db.close()
    write_atomic(out, text)
    proposal["sweep_file"] = str(out)
    if json_out:
        emit_json(proposal)
    else:
        _print_next(proposal)
    typer.echo(f"cp-plan: wrote {plural(len(proposal['runs']), 'run')} to {out}; check it with "
               f"`cp-plan sweep file {out} --dry-run`, train with `cp-plan sweep file {out}`", err=True)


def _print_next(p: dict) -> None:
    t = p["target"]
    typer.echo(f"Next runs for the {t['n_params']:.3g}-parameter plan on {t['hardware']} ({t['parameterization']} "
               f"pick N={t['pick']['n_embd']} L={t['pick']['n_layer']}, N:L {t['pick']['ratio']:.3g}): "
               f"{plural(len(p['runs']), 'run')}, {p['flops_used']:.3g} of {p['budget_flops']:.3g} FLOPs ({p['stopped']})")
    typer.echo("  95% intervals now -> expected after the runs (refit-free preview):")
    for q in p["quantities"]:
        fmt = (lambda v: f"{v:.3g}") if q["scale"] == "ln" else (lambda v: f"{v:+.1%}")
        (a, b), (c, d) = q["interval"], q["expected_interval_after"]
        typer.echo(f"    {q['description']}: {fmt(q['point'])} [{fmt(a)}, {fmt(b)}] -> [{fmt(c)}, {fmt(d)}]")
    typer.echo(f"  {'step':>4} {'param':>9} {'N':>5} {'L':>4} {'N:L':>6} {'params':>10} {'tokens':>11} {'FLOPs':>9} "
               f"{'seed':>4} {'gain':>6}")
    for r in p["runs"]:
        name = r["law"]
        typer.echo(f"  {r['step']:>4} {name:>9} {r['n_embd']:>5} {r['n_layer']:>4} {r['ratio']:>6.3g} {r['n_params']:>10,} "
                   f"{r['n_tokens']:>11,} {r['flops']:>9.3g} {r['seed']:>4} {r['step_gain']:>6.3f}")
    for w in p["warnings"]:
        typer.echo(f"  warning: {w}")


def _print_plan(p: dict) -> None:
    """`recommend --details`: every table of planner.planview, laid out with rich."""
    from rich.console import Console
    from rich.table import Table

    from planner import planview as pv

    console = Console()

    def show(t: pv.Table) -> None:
        table = Table(title=t.title, caption=t.caption or None)
        for col in t.columns:
            table.add_column(col)
        for row in t.rows:
            table.add_row(*row)
        console.print(table)

    head = Table(title=pv.head_title(p), show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    for label, text in pv.head_rows(p):
        head.add_row(label, text)
    console.print(head)
    show(pv.band_table(p))
    if (sv := pv.savings_table(p)) is not None:
        show(sv)
    if (hp := pv.hparams_table(p)) is not None:
        show(hp[0])
        console.print(hp[1])
    else:
        console.print(f"hyperparameters: {p['assumptions']['hparams']}")
    if (alt := pv.alternatives_table(p)) is not None:
        show(alt)
    console.print("[bold]Assumptions[/bold]")
    for line in pv.assumption_lines(p):
        console.print(f"  • {line}")
    for w in p["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


