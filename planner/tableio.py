"""Run-table columns, import validation, and CSV / JSONL / Parquet reading and writing.

This module is the contract between the run database and the files people exchange: the
canonical column names (``CANONICAL_COLUMNS``, used by import, export and ``--json``), the
extra per-run columns the database stores, and :func:`prepare_import`, which turns a table of
published runs into rows the database can insert, or refuses it whole.

Counts (``n_params``, ``n_tokens``, ``flops``) are floats: published data gives fractional
values (Epoch's points are read off an SVG), FLOPs of real models overflow int64, and a double
holds every integer count below 2**53 exactly. When a table gives only one of tokens and FLOPs
the other is derived with the 6ND approximation, C = 6·N·D (Kaplan et al. 2020, eq. 2.1;
Hoffmann et al. 2022 use it for Chinchilla's budgets), and the row's ``flop_convention`` is
'6ND' unless the table names one.

No sqlalchemy here: the database imports this module, not the other way round.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from planner.errors import CpPlanError

TEXT, INT, FLOAT = "text", "int", "float"

#: Canonical run columns, in this order wherever runs leave the database.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "parameterization", "alpha", "n_embd", "n_layer", "n_head",
    "n_params", "n_tokens", "flops", "loss", "lr", "source",
)

#: Every stored run column and its kind, canonical ones first.
RUN_COLUMN_KINDS: dict[str, str] = {
    "run_id": TEXT, "status": TEXT, "parameterization": TEXT, "alpha": FLOAT,
    "n_embd": INT, "n_layer": INT, "n_head": INT,
    "n_params": FLOAT,   # non-embedding parameters
    "n_tokens": FLOAT,   # training tokens
    "flops": FLOAT,      # training FLOPs under `flop_convention`
    "loss": FLOAT,       # final validation loss (nats/token)
    "lr": FLOAT, "source": TEXT,
    # extras
    "config_hash": TEXT, "reason": TEXT, "d_head": INT, "base_n_embd": INT, "base_n_layer": INT,
    "init_std": FLOAT, "vocab_size": INT, "seq_len": INT, "batch_size": INT,
    "steps": INT,        # planned optimizer steps
    "step": INT,         # progress: last completed step (a sweep's parent polls it)
    "flop_convention": TEXT, "train_loss": FLOAT, "tokens_per_s": FLOAT, "wall_s": FLOAT,
    "device": TEXT, "dtype": TEXT, "code_version": TEXT,
    "sweep": TEXT,       # 'shape', 'lr', 'single', 'coord'
    "sweep_id": TEXT,
    "epochs": FLOAT,     # passes over the training text (> 1 means data repeated)
    "worker": TEXT,      # host:pid that wrote the run (and, for claimed runs, holds it)
    "lease_expires_at": TEXT,  # for sweep workers that claim runs with a lease
    "attempts": INT,     # claims of the run by sweep workers in its current sweep (a retry is the 2nd)
    "created_at": TEXT, "updated_at": TEXT,  # ISO-8601 UTC
    "config_json": TEXT,  # the whole frozen training config
}
EXTRA_COLUMNS: tuple[str, ...] = tuple(c for c in RUN_COLUMN_KINDS if c not in CANONICAL_COLUMNS)
RUN_COLUMNS: tuple[str, ...] = tuple(RUN_COLUMN_KINDS)

STATUSES: tuple[str, ...] = ("pending", "running", "done", "diverged", "failed")
FINISHED_STATUSES: tuple[str, ...] = ("done", "diverged", "failed")

CURVE_COLUMN_KINDS: dict[str, str] = {
    "step": INT, "n_tokens": FLOAT, "train_loss": FLOAT, "val_loss": FLOAT, "lr": FLOAT,
    "tokens_per_s": FLOAT, "wall_s": FLOAT, "grad_norm": FLOAT,
}
COORD_COLUMN_KINDS: dict[str, str] = {
    "check_id": TEXT, "parameterization": TEXT, "alpha": FLOAT, "n_embd": INT, "n_layer": INT,
    "step": INT, "resid_abs_mean": FLOAT, "logits_abs_mean": FLOAT, "axis": TEXT, "created_at": TEXT,
}
CURVE_BOUNDS = {"positive": (), "non_negative": tuple(CURVE_COLUMN_KINDS)}  # step 0: no tokens, LR 0
COORD_BOUNDS = {"positive": ("n_embd", "n_layer"), "non_negative": ("step", "resid_abs_mean", "logits_abs_mean")}
COORD_REQUIRED: tuple[str, ...] = ("check_id", "parameterization", "n_embd", "n_layer", "step", "axis")
COORD_AXES: tuple[str, ...] = ("depth", "width")

# Lower bounds per numeric column (strict '>' for counts, '>=' for progress).
_POSITIVE = {"n_params", "n_tokens", "flops", "lr", "init_std", "epochs", "n_embd", "n_layer",
             "n_head", "d_head", "base_n_embd", "base_n_layer", "vocab_size", "seq_len", "batch_size"}
_NON_NEGATIVE = {"steps", "step", "tokens_per_s", "wall_s", "loss", "train_loss", "alpha", "attempts"}
# Guards against unit mistakes (bytes for params, FLOP/s for FLOPs): the largest trained models
# use ~1e26 FLOPs, so anything past this is an error in the table, not a model.
MAX_COUNT = 1e40
MAX_INT = 2**63 - 1  # integer columns are 64-bit in SQLite and PostgreSQL
_COUNTS = ("n_params", "n_tokens", "flops")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRAINED_SOURCE = "trained"
FLOP_CONVENTION_6ND = "6ND"

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


# ------------------------------------------------------------------ value coercion


class BadValue(ValueError):
    """A cell that cannot be coerced; the message completes 'value X ...'."""


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v.__class__.__name__ in ("NAType", "NaTType")


def to_number(v: Any) -> float | None:
    """A cell as a float (None when missing). Numeric strings are accepted (CSV cells are
    strings); booleans, other strings and containers are refused. inf passes through so the
    caller can say 'not finite'."""
    if _is_missing(v):
        return None
    if isinstance(v, bool) or type(v).__name__ in ("bool_", "bool"):
        raise BadValue("is a boolean, not a number")
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            x = float(s)
        except ValueError:
            raise BadValue("is not a number") from None
        return None if math.isnan(x) else x
    try:
        x = float(v)
    except OverflowError:  # an integer beyond any float
        raise BadValue("is too large to be a number (beyond 1.8e308)") from None
    except (TypeError, ValueError):
        raise BadValue(f"has type {type(v).__name__}, not a number") from None
    return None if math.isnan(x) else x


def coerce_value(name: str, kind: str, v: Any, positive: Iterable[str] | None = None,
                 non_negative: Iterable[str] | None = None) -> Any:
    """Coerce one cell of column ``name`` to its stored kind, or raise :class:`BadValue`.

    Missing (None/NaN/empty) → None. INT accepts integral floats and numeric strings; FLOAT
    refuses inf; TEXT accepts strings and integers (ids written as numbers). Bounds default to
    those of run columns (counts > 0)."""
    positive = _POSITIVE if positive is None else positive
    non_negative = _NON_NEGATIVE if non_negative is None else non_negative
    if kind == TEXT:
        if _is_missing(v):
            return None
        if isinstance(v, str):
            return check_text(v)
        if isinstance(v, bool) or type(v).__name__ == "bool_":
            raise BadValue("is a boolean, not text")
        if isinstance(v, int) or type(v).__name__.startswith("int"):
            return str(int(v))
        raise BadValue(f"has type {type(v).__name__}, not text")
    x = to_number(v)
    if x is None:
        return None
    if not math.isfinite(x):
        raise BadValue("is not finite")
    if name in positive and not x > 0:
        raise BadValue("is not positive (must be > 0)")
    if name in non_negative and x < 0:
        raise BadValue("is negative (must be >= 0)")
    if name in _COUNTS and x > MAX_COUNT:
        raise BadValue(f"is larger than {MAX_COUNT:g}, which no training run reaches (a unit mistake?)")
    if kind == INT:
        if not x.is_integer():
            raise BadValue("is not an integer")
        if abs(x) > MAX_INT:
            raise BadValue(f"is too large for an integer column (at most {MAX_INT})")
        return int(x)
    return x


def check_text(v: str) -> str:
    """A text cell both databases can store: no NUL character (PostgreSQL refuses it), valid
    Unicode (a lone surrogate from a JSON escape cannot be encoded)."""
    if "\x00" in v:
        raise BadValue("contains a NUL character")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue("is not valid Unicode (a lone surrogate, e.g. from a JSON \\ud800 escape)") from None
    return v


def parse_pairs(items: Iterable[str] | None, what: str) -> list[tuple[str, str]]:
    """Parse ``key=value`` options (``--rename src=dst``, ``--set col=value``, ``--where col=val``)."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CpPlanError(f"{what} {item!r} is not of the form KEY=VALUE; e.g. {what} 'Model Size=n_params'")
        out.append((key.strip(), value.strip()))
    return out


# ------------------------------------------------------------------ reading and writing files


def table_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise CpPlanError(f"{str(path)!r} has extension {suffix or '(none)'!r}; use one of "
                          f"{', '.join(TABLE_FORMATS)} (CSV, JSON lines or Parquet)")
    return TABLE_FORMATS[suffix]


def read_table(path: str | Path):
    """Read a CSV, JSONL or Parquet table into a DataFrame without guessing types away: CSV
    cells stay strings (validation converts them), JSONL values keep their JSON types."""
    import pandas as pd

    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise CpPlanError(f"no file at {str(path)!r}; check the path")
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, skipinitialspace=True)
        if fmt == "parquet":
            return pd.read_parquet(path)
        records = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CpPlanError(f"{path}: line {lineno} is not valid JSON ({exc.msg}); "
                                      "JSONL needs one JSON object per line") from None
                if not isinstance(rec, dict):
                    raise CpPlanError(f"{path}: line {lineno} is a JSON {type(rec).__name__}, not an object")
                records.append(rec)
        return pd.DataFrame.from_records(records) if records else pd.DataFrame()
    except CpPlanError:
        raise
    except Exception as exc:  # parser errors from pandas/pyarrow: one line, no traceback
        raise CpPlanError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def _json_default(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def write_table(df, path: str | Path) -> Path:
    """Write ``df`` as CSV, JSONL or Parquet (by extension), atomically (temp file + rename).

    Floats round-trip exactly: CSV and JSONL use Python's shortest repr; NaN becomes an empty
    cell or null."""
    path = Path(path)
    fmt = table_format(path)
    if not path.parent.is_dir():
        raise CpPlanError(f"directory {str(path.parent)!r} does not exist; create it or choose another --out")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            try:
                df.to_parquet(tmp, index=False)
            except Exception as exc:
                raise CpPlanError(f"cannot write Parquet: {str(exc).splitlines()[0]}; "
                                  "export to .csv or .jsonl instead") from exc
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in df.to_dict(orient="records"):
                    clean = {k: (None if _is_missing(v) or (isinstance(v, float) and not math.isfinite(v)) else v)
                             for k, v in rec.items()}
                    f.write(json.dumps(clean, default=_json_default) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def rename_columns(df, renames: list[tuple[str, str]]):
    """Apply ``src=dst`` column renames, refusing unknown sources and name collisions."""
    cols = [str(c) for c in df.columns]
    df = df.set_axis(cols, axis=1)
    mapping: dict[str, str] = {}
    for src, dst in renames:
        if src not in cols:
            raise CpPlanError(f"--rename {src}={dst}: the table has no column {src!r}; its columns are "
                              f"{', '.join(map(repr, cols))}")
        if dst in mapping.values():
            raise CpPlanError(f"--rename: two columns renamed to {dst!r}; keep one")
        mapping[src] = dst
    final = [mapping.get(c, c) for c in cols]
    dupes = sorted({c for c in final if final.count(c) > 1})
    if dupes:
        raise CpPlanError(f"--rename gives two columns named {dupes[0]!r}; rename the table's own "
                          f"{dupes[0]!r} column away first (e.g. --rename {dupes[0]}=orig_{dupes[0]})")
    return df.rename(columns=mapping)


def set_columns(df, sets: list[tuple[str, str]]):
    """Apply ``col=value``: every row gets ``value`` in ``col`` (replacing the table's column)."""
    df = df.copy()
    for col, value in sets:
        df[col] = value
    return df


# ------------------------------------------------------------------ import validation


@dataclass(frozen=True)
class ImportPlan:
    """Validated rows ready to insert, and what validation derived on the way."""

    source: str
    rows: tuple[dict, ...]
    derived_n_tokens: int = 0   # rows whose n_tokens came from D = C / 6N
    derived_flops: int = 0      # rows whose flops came from C = 6ND
    generated_run_ids: int = 0  # rows given run_id f"{source}-{row index}"
    extra_columns: tuple[str, ...] = field(default_factory=tuple)
    flop_conventions: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (convention, rows)

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.rows]

    def summary(self) -> dict:
        return {"source": self.source, "n_rows": len(self.rows), "derived_n_tokens": self.derived_n_tokens,
                "derived_flops": self.derived_flops, "generated_run_ids": self.generated_run_ids,
                "extra_columns": list(self.extra_columns), "flop_conventions": dict(self.flop_conventions)}


def check_source(source: Any) -> str:
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise CpPlanError(f"source {source!r} is not a valid name; use letters, digits, '.', '_' or '-' "
                          "(at most 64 characters), e.g. --source epoch-chinchilla")
    if source == TRAINED_SOURCE:
        raise CpPlanError(f"source {TRAINED_SOURCE!r} is reserved for runs cp-plan trains; name the import "
                          "after where the runs come from, e.g. --source chinchilla")
    return source


def prepare_import(df, source: str, now: str | None = None) -> ImportPlan:
    """Validate every row of a runs table and return the rows to insert, or raise.

    Required columns: ``n_params``, ``loss`` and at least one of ``n_tokens`` / ``flops``; a row
    missing one of the pair gets it from C = 6·N·D (flop_convention '6ND' unless given).
    Columns that are not run columns are kept per row as extras. A 'done' row needs a finite
    loss > 0; a 'diverged' or 'failed' row may have none (a non-finite loss there is stored as
    missing). Every problem in the table is collected and the first few reported, naming row
    (1-based, header not counted), column and value, so one round of fixes suffices.

    Documented coercions: numeric strings become numbers, integral floats integers; a
    non-finite loss of a 'diverged'/'failed' row is stored as missing; FLOP conventions are
    per row, so a table mixing them imports each row under its own (counted in
    ``ImportPlan.flop_conventions`` and reported by ``cp-plan runs import``); the fitters
    record which conventions a fit used.
    """
    source = check_source(source)
    cols = [str(c) for c in df.columns]
    if list(df.columns) != cols:  # e.g. integer column labels from an API caller
        df = df.set_axis(cols, axis=1)
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise CpPlanError(f"the table has two columns named {dup!r}; rename or drop one")
    if len(df) == 0:
        raise CpPlanError("the table has no rows; nothing to import")
    missing = [c for c in ("n_params", "loss") if c not in cols]
    if not ("n_tokens" in cols or "flops" in cols):
        missing.append("n_tokens or flops")
    if missing:
        raise CpPlanError(f"the table lacks required column(s) {', '.join(missing)}; its columns are "
                          f"{', '.join(map(repr, cols))}; map yours with --rename, e.g. "
                          "--rename 'Model Size=n_params' --rename 'Training FLOP=flops'")
    for reserved in ("rev", "extra_json"):
        if reserved in cols:
            raise CpPlanError(f"column {reserved!r} is internal to the run database; rename it "
                              f"(--rename {reserved}=orig_{reserved})")

    known = [c for c in cols if c in RUN_COLUMN_KINDS]
    extras = tuple(c for c in cols if c not in RUN_COLUMN_KINDS)
    values = {c: df[c].tolist() for c in cols}
    for c in extras:  # CSV cells are strings: an extra column of numbers is stored as numbers
        try:
            nums = [to_number(v) for v in values[c]]
        except BadValue:
            continue
        if any(isinstance(v, str) for v in values[c]) and all(x is None or math.isfinite(x) for x in nums):
            values[c] = nums
    problems: list[str] = []
    bad_cells: set[tuple[int, str]] = set()

    def bad(i: int, col: str, raw: Any, why: str) -> None:
        bad_cells.add((i, col))
        problems.append(f"row {i + 1}, column {col!r}: value {raw!r} {why}")

    rows: list[dict] = []
    seen_ids: dict[str, int] = {}
    n_tok = n_flops = n_gen = 0
    for i in range(len(df)):
        row: dict[str, Any] = {}
        for c in known:
            raw = values[c][i]
            try:
                if c in ("loss", "train_loss"):
                    x = to_number(raw)  # whether inf is allowed depends on the status, below
                    if x is not None and x < 0:
                        raise BadValue("is negative (a loss is >= 0)")
                    row[c] = x
                else:
                    row[c] = coerce_value(c, RUN_COLUMN_KINDS[c], raw)
            except BadValue as exc:
                bad(i, c, raw, str(exc))
                row[c] = None

        status = row.get("status") or "done"
        if status not in FINISHED_STATUSES:
            bad(i, "status", status, f"is not one of {', '.join(FINISHED_STATUSES)} "
                "(only finished runs can be imported)")
        row["status"] = status
        for c in ("loss", "train_loss"):
            x = row.get(c)
            if x is not None and not math.isfinite(x):
                if status == "done":
                    bad(i, c, values[c][i], "is not finite (a 'done' run needs a finite loss)")
                row[c] = None  # documented coercion: a diverged run's inf loss is stored as missing
        if status == "done" and row.get("loss") is None and (i, "loss") not in bad_cells:
            bad(i, "loss", values["loss"][i], "is missing (a 'done' run needs its final validation loss)")
        if row.get("n_params") is None and (i, "n_params") not in bad_cells:
            bad(i, "n_params", values["n_params"][i], "is missing (every run needs its non-embedding parameters)")
        if row.get("source") is not None and row["source"] != source:
            bad(i, "source", row["source"], f"differs from --source {source!r}; keep the table's value as an "
                "extra with --rename source=orig_source, or import under that source")
        row["source"] = source

        n, d, c_ = row.get("n_params"), row.get("n_tokens"), row.get("flops")
        if n is not None and d is None and c_ is not None:
            row["n_tokens"] = c_ / (6.0 * n)  # D = C / 6N
            n_tok += 1
        elif n is not None and c_ is None and d is not None:
            f = 6.0 * n * d  # C = 6ND
            if f > MAX_COUNT:
                bad(i, "flops", f, "(derived as 6*n_params*n_tokens) is implausibly large; check the units")
            row["flops"] = f
            n_flops += 1
        elif d is None and c_ is None and (i, "n_tokens") not in bad_cells and (i, "flops") not in bad_cells:
            bad(i, "n_tokens", None, "and flops are both missing; give at least one")
        if row.get("flops") is not None and not row.get("flop_convention"):
            row["flop_convention"] = FLOP_CONVENTION_6ND

        rid = row.get("run_id")
        if rid is None and (i, "run_id") not in bad_cells:
            rid = f"{source}-{i}"
            n_gen += 1
        elif rid is not None:
            rid = rid.strip()
            if not rid or len(rid) > 200 or any(ord(ch) < 32 for ch in rid):
                bad(i, "run_id", values["run_id"][i], "is not a usable id (1 to 200 printable characters)")
        if rid is not None:
            if rid in seen_ids:
                bad(i, "run_id", rid, f"repeats the run_id of row {seen_ids[rid] + 1}; run ids must be unique")
            else:
                seen_ids[rid] = i
        row["run_id"] = rid

        if row.get("config_json") is not None:
            try:
                json.loads(row["config_json"])
            except json.JSONDecodeError:
                bad(i, "config_json", row["config_json"][:40], "is not valid JSON")
        extra = {}
        for c in extras:
            v = values[c][i]
            if hasattr(v, "item") and not isinstance(v, (str, bytes)):
                v = v.item()
            if _is_missing(v) or (isinstance(v, float) and not math.isfinite(v)):
                continue
            extra[c] = v if isinstance(v, (str, int, float, bool)) else str(v)
        row["extra_json"] = json.dumps(extra, sort_keys=True) if extra else None
        if now is not None:
            row["created_at"] = row.get("created_at") or now
            row["updated_at"] = row.get("updated_at") or now
        rows.append(row)

    if problems:
        shown = "; ".join(problems[:5])
        more = f"; ... and {len(problems) - 5} more problem(s)" if len(problems) > 5 else ""
        n_bad = len({i for i, _ in bad_cells})
        raise CpPlanError(f"refusing to import: {n_bad} of {len(df)} row(s) are bad, nothing was "
                          f"imported. {shown}{more}. Fix or drop those rows and import again")
    conventions: dict[str, int] = {}
    for row in rows:
        if row.get("flop_convention"):
            conventions[row["flop_convention"]] = conventions.get(row["flop_convention"], 0) + 1
    return ImportPlan(source=source, rows=tuple(rows), derived_n_tokens=n_tok, derived_flops=n_flops,
                      generated_run_ids=n_gen, extra_columns=extras,
                      flop_conventions=tuple(sorted(conventions.items())))


def records_for_json(df, columns: Iterable[str] | None = None) -> list[dict]:
    """Rows as plain-Python dicts for ``--json``: integer run columns as ints (a DataFrame
    holds them as floats when some runs lack them), missing and non-finite values as None."""
    cols = list(columns) if columns is not None else list(df.columns)
    out = []
    for rec in df[cols].to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if hasattr(v, "item") and not isinstance(v, (str, bytes)):
                v = v.item()
            if _is_missing(v) or (isinstance(v, float) and not math.isfinite(v)):
                v = None
            elif RUN_COLUMN_KINDS.get(k) == INT and isinstance(v, float) and v.is_integer():
                v = int(v)
            clean[k] = v
        out.append(clean)
    return out
