"""Run-table columns, value coercion, ``--where`` expressions, and CSV / JSONL / Parquet reading
and writing.

This module is the contract between the run database and the files people exchange: the
canonical column names (``CANONICAL_COLUMNS``, used by import, export and ``--json``) and the
extra per-run columns the database stores. Turning a table of published runs into rows the
database can insert (or refusing it whole) is :mod:`planner.importing`.

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
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from planner.errors import CpPlanError
from planner.shapes import block_params

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
# A mean per-token loss in nats: uniform guessing over a 1M-token vocabulary is ln(1e6) ≈ 14, so
# a larger value is a sum over tokens or a perplexity, not a loss.
MAX_LOSS = 100.0
# Bookkeeping the database, the trainer and sweep workers own: an imported value would be
# trusted (a 'done' row with a real config hash makes `train --resume` and sweeps skip training).
INTERNAL_COLUMNS: tuple[str, ...] = ("rev", "seq", "extra_json", "config_hash", "config_json", "worker",
                                     "lease_expires_at", "attempts", "step", "sweep", "created_at", "updated_at")
_COUNTS = ("n_params", "n_tokens", "flops")
MAX_CSV_CELL = 16 << 20  # bytes in one CSV cell
_SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would let a trailing newline in
TRAINED_SOURCE = "trained"

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


# ------------------------------------------------------------------ --where expressions

WHERE_OPERATORS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=")
_WHERE_RE = re.compile(r"^\s*([^<>=!]*?)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$", re.S)


def parse_where(items: Iterable[str] | None) -> list[tuple[str, str, str | None]]:
    """Parse ``--where`` expressions ``COLUMN OP VALUE`` (OP one of :data:`WHERE_OPERATORS`;
    ``==`` reads as ``=``) into ``(column, op, value)``; VALUE ``null`` (None) means missing and
    goes with ``=`` or ``!=`` only. Types are checked where the column is known (the database)."""
    ops = ", ".join(WHERE_OPERATORS)
    out = []
    for item in items or ():
        m = _WHERE_RE.match(item)
        if not m or not m.group(1) or not m.group(3) or m.group(3)[0] in "<>=!":
            raise CpPlanError(f"--where {item!r} is not COLUMN OP VALUE with OP one of {ops}; e.g. "
                              "--where 'n_params>=1e6' --where 'loss<3' --where n_layer!=2 --where lr=null")
        col, op, value = m.groups()
        op = "=" if op == "==" else op
        if value == "null":
            if op not in ("=", "!="):
                raise CpPlanError(f"--where {item!r}: null (missing) goes with = or != only, not {op}")
            value = None
        out.append((col, op, value))
    return out


def format_where(terms: Iterable[tuple[str, str, Any]]) -> list[str]:
    """``(column, op, value)`` terms back as the ``--where`` strings they came from."""
    return [f"{c}{op}{'null' if v is None else v}" for c, op, v in terms]


# ------------------------------------------------------------------ parameter counts of imported runs

#: How ``runs import --param-count`` counts a block's parameters (non-embedding), from n_embd N
#: and n_layer L; 'given' takes n_params from the table as it is.
PARAM_COUNTS: tuple[str, ...] = ("given", "gpt2-12N2", "swiglu")
SWIGLU_MULTIPLE_OF = 256  # LLaMA's ModelArgs.multiple_of: the SwiGLU hidden size is rounded up to it
# A given n_params this far above the count for its shape looks embedding-inclusive: with the
# architecture unknown ('given') only a gross excess is flagged (a SwiGLU block at tiny widths is
# ~1.3x a GELU one); with a chosen count, anything beyond COUNT_TOLERANCE either way is reported
# (LLaMA-7B's untied embeddings are 4% of its count, GPT-2 XL's 5%; below 2% a count error moves
# a fitted law less than the laws' own intervals).
EMBEDDING_WARN_RATIO = 1.3
COUNT_TOLERANCE = 0.02


def swiglu_hidden(n_embd):
    """LLaMA's SwiGLU hidden size for width N: int(2·4N/3) rounded up to a multiple of 256
    (meta-llama/llama ``FeedForward``, ffn_dim_multiplier unset): 11008 at N = 4096."""
    n = np.asarray(n_embd, dtype=float)
    h = np.floor(8.0 * n / 3.0)
    return SWIGLU_MULTIPLE_OF * np.ceil(h / SWIGLU_MULTIPLE_OF)


def count_params(param_count: str, n_embd, n_layer) -> np.ndarray:
    """Non-embedding parameters of a shape under ``param_count`` (float64; NaN where N or L is).

    - ``gpt2-12N2``: L·(12N² + 13N) + 2N, the pre-LN GPT-2 block with a 4N GELU MLP and biases
      (:func:`planner.shapes.n_params_nonembedding`);
    - ``swiglu``: L·(4N² + 3·N·h + 2N) + N, the LLaMA block: attention Wq, Wk, Wv, Wo without
      biases (4N², full multi-head: no grouped KV heads), SwiGLU MLP W1, W2, W3 (3·N·h, h from
      :func:`swiglu_hidden`), two RMSNorm weights per block and a final one (LLaMA-7B: 6.476e9).
    """
    n = np.asarray(n_embd, dtype=float)
    layers = np.asarray(n_layer, dtype=float)
    if param_count == "gpt2-12N2":
        return layers * block_params(n) + 2.0 * n
    if param_count == "swiglu":
        return layers * (4.0 * n * n + 3.0 * n * swiglu_hidden(n) + 2.0 * n) + n
    raise CpPlanError(f"--param-count {param_count!r} is not one of {', '.join(PARAM_COUNTS)}")


def embedding_params(vocab_size: float, n_embd, seq_len=None, *, untied: bool = False,
                     learned_positions: bool = False) -> np.ndarray:
    """What ``--subtract-embeddings VOCAB`` takes off n_params: V·N for the token embedding, V·N
    more for an untied output layer, and T·N for learned position embeddings (T = seq_len):
    GPT-2 (tied, learned positions) V·N + T·N; LLaMA (untied, rotary) 2·V·N."""
    n = np.asarray(n_embd, dtype=float)
    out = (2.0 if untied else 1.0) * float(vocab_size) * n
    if learned_positions:
        out = out + np.asarray(seq_len, dtype=float) * n
    return out


def source_from_path(path: str | Path) -> str:
    """The default ``--source``: the file's stem, with characters a source name cannot hold
    turned into '-' (``Epoch data (2024).csv`` → ``Epoch-data-2024``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-._")[:64].rstrip("-._")
    if not stem or stem == TRAINED_SOURCE:
        raise CpPlanError(f"the file name {Path(path).name!r} gives no usable source name; name where the "
                          "runs come from with --source, e.g. --source epoch-chinchilla")
    return stem


def is_cp_plan_export(columns: Iterable[str]) -> bool:
    """Whether a table's header is what ``cp-plan runs export`` writes: the canonical columns,
    in order, first (``--all-columns`` adds the stored ones and imported extras after them)."""
    cols = tuple(str(c) for c in columns)
    return cols[:len(CANONICAL_COLUMNS)] == CANONICAL_COLUMNS


# ------------------------------------------------------------------ reading and writing files


def table_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise CpPlanError(f"{str(path)!r} has extension {suffix or '(none)'!r}; use one of "
                          f"{', '.join(TABLE_FORMATS)} (CSV, JSON lines or Parquet)")
    return TABLE_FORMATS[suffix]


def check_csv_structure(path: Path) -> int:
    """Refuse a CSV whose records do not all have the header's number of fields, or whose
    quoting is broken; return the number of records. pandas would read a row with one field
    too many (e.g. a trailing comma) by taking its first field as the index, shifting every
    column one place, and would pad a short row with missing cells: both silently wrong.
    Streams the file (one record at a time), so any size is fine."""
    import csv

    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, MAX_CSV_CELL))  # what `runs export` writes, import reads (128 KiB default)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True, strict=True)
            header = next(reader, None)
            if header is None:
                raise CpPlanError(f"{path} is empty; a CSV needs a header line naming its columns")
            names = [h.strip() for h in header]
            dupes = sorted({h for h in names if names.count(h) > 1})
            if dupes:
                raise CpPlanError(f"{path}: column {dupes[0]!r} appears twice in the header; which one holds the "
                                  "values is ambiguous, so nothing was imported: rename or drop one of them")
            width, n = len(header), 0
            for record in reader:
                if not record:  # a blank line (pandas skips them too)
                    continue
                n += 1
                if len(record) != width:
                    hint = (" (a trailing comma?)" if len(record) == width + 1 and record[-1] == "" else
                            " (an unquoted comma inside a value?)" if len(record) > width else
                            " (a missing separator, or a cut-off line?)")
                    raise CpPlanError(
                        f"{path}: line {reader.line_num} has {len(record)} field(s) but the header has "
                        f"{width}{hint}; every row needs exactly one field per header column (quote "
                        "values that contain commas), so nothing was imported")
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise CpPlanError(f"{path}: line {reader.line_num} has a cell over {MAX_CSV_CELL >> 20} MiB; a run's "
                              "values are numbers and short names: drop or shorten that column") from None
        raise CpPlanError(f"{path}: line {reader.line_num} is not valid CSV ({exc}); check its quotes "
                          "(a value with a comma or quote goes in double quotes, inner quotes doubled)") from None
    except UnicodeDecodeError as exc:
        raise CpPlanError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    finally:
        csv.field_size_limit(limit)
    return n


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


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
            check_csv_structure(path)
            # Cells stay text (validation parses them) in compact Arrow strings, not Python objects.
            return pd.read_csv(path, dtype="string[pyarrow]", skipinitialspace=True, index_col=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
        records = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line, object_pairs_hook=_no_duplicate_keys)
                except _DuplicateKey as exc:
                    raise CpPlanError(f"{path}: line {lineno} names key {str(exc)!r} twice; which value counts is "
                                      "ambiguous, so nothing was imported: keep one of them") from None
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


def nested_text(v) -> str:
    """A nested imported value (a JSONL object or list, a Parquet list or struct) as JSON text,
    which reads back with json.loads (Python's repr would not); anything else as str."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, (dict, list, tuple)):
        try:
            return json.dumps(v, sort_keys=True, default=_json_default, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            pass
    return str(v)


def _json_default(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def write_table(df, path: str | Path) -> Path:
    """Write ``df`` as CSV, JSONL or Parquet (by extension), atomically (temp file + rename;
    :func:`planner.fileio.write_atomic`): a full disk leaves the old file and a one-line error.

    Floats round-trip exactly: CSV and JSONL use Python's shortest repr; NaN becomes an empty
    cell or null."""
    from planner.fileio import write_atomic

    path = Path(path)
    fmt = table_format(path)

    def write(tmp: str) -> None:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            try:
                df.to_parquet(tmp, index=False)
            except OSError:
                raise
            except Exception as exc:
                raise CpPlanError(f"cannot write Parquet: {str(exc).splitlines()[0]}; "
                                  "export to .csv or .jsonl instead") from exc
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in df.to_dict(orient="records"):
                    clean = {k: (None if _is_missing(v) or (isinstance(v, float) and not math.isfinite(v)) else v)
                             for k, v in rec.items()}
                    f.write(json.dumps(clean, default=_json_default) + "\n")

    return write_atomic(path, write)


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


def embedding_formula(untied: bool, learned_positions: bool) -> str:
    return ("2·VOCAB·n_embd" if untied else "VOCAB·n_embd") + (" + seq_len·n_embd" if learned_positions else "")
