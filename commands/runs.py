"""`cp-plan runs ...`: list, show, snapshot, retrain, export and import runs (planner.db, planner.tableio)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import DbOpt, emit_json, fmt_cell, JsonOpt, plural, where_terms, WhereOpt
from planner.errors import CpPlanError

runs_app = typer.Typer(help='List, show, export and import runs in the run database.', no_args_is_help=True, rich_markup_mode=None)

# ---------------------------------------------------------------- runs (planner.db)
# (run database commands go here)
class RunStatus(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    diverged = "diverged"
    failed = "failed"


StatusOpt = Annotated[Optional[list[RunStatus]], typer.Option("--status", metavar="[pending|running|done|diverged|failed]", help="Only runs with this status (repeatable; default: all).")]
AllColsOpt = Annotated[bool, typer.Option("--all-columns", help="Every stored column, not just the canonical ones.")]


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

    run_db = RunDB(db, create=False)
    df = run_db.runs(where=where_terms(where), statuses=[s.value for s in status] if status else None,
                  limit=limit or None)
    records = records_for_json(df, df.columns if all_columns else CANONICAL_COLUMNS)
    if json_out:
        if not all_columns:  # context and seed tell replicates and settings apart (issue 11)
            records = records_for_json(df, list(CANONICAL_COLUMNS) + ["seq_len"])
        for rec, seed in zip(records, _run_seeds(df)):
            rec.setdefault("seed", seed)
        emit_json(records)
        return
    from rich.console import Console
    from rich.table import Table

    if not all_columns and "sweep_id" in df.columns:  # the table also says which sweep a run belongs to
        records = records_for_json(df, list(CANONICAL_COLUMNS) + ["sweep_id"])
    shown = list(records[0]) if records and all_columns else [
        "run_id", "status", "source", "sweep_id", "parameterization", "alpha", "n_embd", "n_layer",
        "n_params", "n_tokens", "flops", "loss", "lr"]
    table = Table(title=f"{plural(len(records), 'run')} in {run_db.display}",  # piped output gets room, not 80 columns
                  caption=None if all_columns else "validation loss: nats per token of each run's tokenizer "
                  "(bytes for cp-plan's own runs); training FLOPs: each run's flop_convention")
    for col in shown:
        table.add_column(col if all_columns else RUN_HEADERS.get(col, col),
                         justify="left" if col in ("run_id", "status", "source", "sweep_id", "parameterization") else "right")
    for rec in records:
        table.add_row(*(fmt_cell(rec.get(c)) for c in shown))
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

    run_db = RunDB(db, create=False)
    run = run_db.get_run(run_id)
    config = run.pop("config")
    run.pop("config_json")
    points = run_db.curve(run["run_id"])
    out = {"run": run, "config": config, "curve_summary": curve_summary(points)}
    if curve:
        out["curve"] = records_for_json(points)
    if json_out:
        emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run['run_id']} ({run['status']}) in {run_db.display}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in run.items():
        if value is not None:
            table.add_row(key, fmt_cell(value))
    console = Console()
    console.print(table)
    if config:
        console.print("config: " + json.dumps(config, sort_keys=True))
    console.print("curve: " + ", ".join(f"{k}={fmt_cell(v)}" for k, v in out["curve_summary"].items()))
    for point in out.get("curve", []):
        console.print("  " + "  ".join(f"{k}={fmt_cell(v)}" for k, v in point.items() if v is not None))


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
        emit_json(got)
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

    run_db = RunDB(db, create=False)
    before = run_db.reopen_run(run_id)
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
        emit_json(out)
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
    run_db = RunDB(db, create=False)
    df = run_db.runs(where=where_terms(where), statuses=[s.value for s in status] if status else None)
    # the FLOP convention travels with the flops, so an import of the file does not relabel them 6ND
    write_table(df if all_columns else df[list(CANONICAL_COLUMNS) + ["flop_convention"]], out)
    if json_out:
        emit_json({"out": str(out), "n_runs": len(df), "db": run_db.display})
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
    from planner.importing import prepare_import
    from planner.tableio import (INTERNAL_COLUMNS, parse_pairs, read_table, records_for_json, rename_columns,
                                 set_columns, source_from_path)

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
            emit_json(out)
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
    run_db = RunDB(db, create=True)
    n = run_db.import_plan(plan)
    for rid, points in curves.items():
        run_db.add_curve(rid, points)
    summary = {"imported": n, "file": str(file), "db": run_db.display, "mapping": dict(mapped), "notes": notes,
               "curves": len(curves), **plan.summary()}
    if json_out:
        emit_json(summary)
        return
    sources = (f"source {plan.sources[0][0]!r}" if len(plan.sources) == 1 else "sources "
               + ", ".join(f"{s!r} ({plural(k, 'run')})" for s, k in plan.sources))
    typer.echo(f"imported {n} run(s) from {file} into {run_db.display} as {sources}")
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


