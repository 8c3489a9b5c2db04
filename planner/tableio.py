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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from planner.errors import CpPlanError
from planner.shapes import FLOP_CONVENTION_6ND, block_params

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


def _nested_text(v) -> str:
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


# ------------------------------------------------------------------ import validation


@dataclass(frozen=True, eq=False)
class ImportPlan:
    """Validated rows ready to insert, held column-wise (one array per stored column, None or
    NaN for missing) so a million-row table costs arrays, not a million dicts; :meth:`chunks`
    yields the rows as dicts a few thousand at a time for the insert."""

    source: str
    columns: dict = field(repr=False)  # stored column -> numpy array (float64 with NaN, or object)
    n_rows: int = 0
    derived_n_tokens: int = 0   # rows whose n_tokens came from D = C / 6N
    derived_flops: int = 0      # rows whose flops came from C = 6ND
    generated_run_ids: int = 0  # rows given run_id f"{source}-{row index}"
    extra_columns: tuple[str, ...] = field(default_factory=tuple)
    ignored_columns: tuple[str, ...] = field(default_factory=tuple)  # empty internal columns, dropped
    flop_conventions: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (convention, rows)
    sources: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (source, rows)
    param_count: str = "given"   # how n_params was counted (PARAM_COUNTS)
    derived_n_params: int = 0    # rows whose n_params came from the param_count formula
    subtracted_embeddings: int = 0  # rows whose n_params had embeddings taken off
    kept_internal_columns: tuple[str, ...] = field(default_factory=tuple)  # a cp-plan export's, kept as orig_*
    warnings: tuple[str, ...] = field(default_factory=tuple)  # imported anyway; worth a look

    @property
    def run_ids(self) -> list[str]:
        return list(self.columns["run_id"])

    @property
    def rows(self) -> tuple[dict, ...]:
        """Every row as a dict (small tables and tests; the database inserts :meth:`chunks`)."""
        return tuple(r for chunk in self.chunks(self.n_rows or 1) for r in chunk)

    def chunks(self, size: int = 5000) -> Iterable[list[dict]]:
        """The rows as lists of at most ``size`` dicts (stored columns only, None for missing)."""
        names = list(self.columns)
        for start in range(0, self.n_rows, size):
            cols = []
            for name in names:
                a = self.columns[name][start:start + size]
                if a.dtype.kind == "f":
                    cols.append([None if v != v else v for v in a.tolist()])
                else:
                    cols.append(a.tolist())
            yield [dict(zip(names, vals)) for vals in zip(*cols)]

    def summary(self) -> dict:
        return {"source": self.source, "n_rows": self.n_rows, "derived_n_tokens": self.derived_n_tokens,
                "derived_flops": self.derived_flops, "generated_run_ids": self.generated_run_ids,
                "extra_columns": list(self.extra_columns), "ignored_columns": list(self.ignored_columns),
                "flop_conventions": dict(self.flop_conventions), "sources": dict(self.sources),
                "param_count": self.param_count, "derived_n_params": self.derived_n_params,
                "subtracted_embeddings": self.subtracted_embeddings,
                "kept_internal_columns": list(self.kept_internal_columns), "warnings": list(self.warnings)}


def check_source(source: Any) -> str:
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise CpPlanError(f"source {source!r} is not a valid name; use letters, digits, '.', '_' or '-' "
                          "(at most 64 characters), e.g. --source epoch-chinchilla")
    if source == TRAINED_SOURCE:
        raise CpPlanError(f"source {TRAINED_SOURCE!r} is reserved for runs cp-plan trains; name the import "
                          "after where the runs come from, e.g. --source chinchilla")
    return source


_NUMBER_RE = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _is_string_series(s) -> bool:
    import pandas as pd

    return isinstance(s.dtype, pd.StringDtype)


def _plain_numbers(s):
    """(values float64, fast mask): cells of a string or numeric column that are plain decimal
    numbers, parsed in one vectorized pass. Every other cell (text, booleans, 'inf', odd
    Unicode digits, JSON values) takes the per-cell path, whose verdict is authoritative."""
    import pandas as pd

    n = len(s)
    if s.dtype.kind == "f":
        x = np.array(s, dtype=float)
        return x, np.isfinite(x)
    if s.dtype.kind in "iu":
        x = np.array(s, dtype=float)
        return x, np.abs(x) < 2.0**53  # beyond that a float64 would not hold the integer exactly
    if _is_string_series(s):
        stripped = s.str.strip()
        match = np.array(stripped.str.fullmatch(_NUMBER_RE).fillna(False), dtype=bool)
        x = np.array(pd.to_numeric(stripped.where(match), errors="coerce").to_numpy(dtype=float, na_value=np.nan))
        return x, match & np.isfinite(x)
    return np.full(n, np.nan), np.zeros(n, dtype=bool)


def _missing_mask(s) -> np.ndarray:
    m = np.array(s.isna(), dtype=bool)
    if _is_string_series(s):
        m |= (s.str.strip() == "").fillna(False).to_numpy(dtype=bool)
    return m


def _numeric_column(name: str, kind: str, s, bad, *, loss: bool = False) -> np.ndarray:
    """A numeric run column, validated: float64 (NaN = missing) for FLOAT, object (int/None) for
    INT. Bad cells are reported through ``bad`` and become missing. Loss columns allow inf here
    (whether a row may have it depends on its status) and must lie in (0, MAX_LOSS]."""
    x, fast = _plain_numbers(s)
    missing = _missing_mask(s)
    fast &= ~missing
    with np.errstate(invalid="ignore"):
        if loss:
            fast &= (x > 0) & (x <= MAX_LOSS)
        else:
            if name in _POSITIVE:
                fast &= x > 0
            if name in _NON_NEGATIVE:
                fast &= x >= 0
            if name in _COUNTS:
                fast &= x <= MAX_COUNT
            if kind == INT:
                fast &= (x == np.round(x)) & (np.abs(x) <= MAX_INT)
    out = np.where(fast, x, np.nan)
    slow = np.nonzero(~fast & ~missing)[0]
    raw_values = s.to_numpy(dtype=object) if slow.size else None
    for i in slow:
        raw = raw_values[i]
        try:
            v = _loss_value(raw) if loss else coerce_value(name, kind, raw)
        except BadValue as exc:
            bad(int(i), name, raw, str(exc))
            v = None
        out[i] = np.nan if v is None else v
    if kind == INT:
        obj = np.empty(len(out), dtype=object)
        ok = np.isfinite(out)
        if slow.size:  # the per-cell path may hold integers beyond 2**53 exactly
            exact = {int(i): coerce_value(name, kind, raw_values[i]) for i in slow if ok[i]}
        else:
            exact = {}
        obj[:] = [None] * len(out)
        idx = np.nonzero(ok)[0]
        obj[idx] = [int(v) for v in out[idx].tolist()]
        for i, v in exact.items():
            obj[i] = v
        return obj
    return out


def _loss_value(raw: Any) -> float | None:
    x = to_number(raw)
    if x is None:
        return None
    if x < 0:
        raise BadValue("is negative (a loss is > 0 nats/token)")
    if x == 0:
        raise BadValue("is zero (a loss is > 0 nats/token; no model predicts text perfectly)")
    if math.isfinite(x) and x > MAX_LOSS:
        raise BadValue(f"is above {MAX_LOSS:g} nats/token, far past any real model (a sum over tokens, "
                       "or perplexity? give the mean per-token loss in nats)")
    return x


def _text_column(name: str, s, bad) -> np.ndarray:
    """A text column as an object array of str/None, validated."""
    out = np.empty(len(s), dtype=object)
    if _is_string_series(s):
        vals = s.to_numpy(dtype=object, na_value=None)
        has_nul = s.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        out[:] = list(vals)
        for i in np.nonzero(has_nul)[0]:
            bad(int(i), name, vals[i], "contains a NUL character")
            out[i] = None
        return out
    vals = s.to_numpy(dtype=object)
    res = [None] * len(vals)
    for i, raw in enumerate(vals):
        try:
            res[i] = coerce_value(name, TEXT, raw)
        except BadValue as exc:
            bad(i, name, raw, str(exc))
    out[:] = res
    return out


def _extra_column(s) -> np.ndarray:
    """An extra (non-run) column as plain Python values; a CSV column of numbers becomes numbers."""
    if _is_string_series(s):
        x, fast = _plain_numbers(s)
        missing = _missing_mask(s)
        if (fast | missing).all():
            return np.where(missing, np.nan, x)
        return s.to_numpy(dtype=object, na_value=None)
    vals = s.to_numpy(dtype=object)
    out = np.empty(len(vals), dtype=object)
    # numpy scalars become Python ones; arrays (a Parquet list column) stay, stored as JSON text
    out[:] = [v.item() if hasattr(v, "item") and np.ndim(v) == 0 and not isinstance(v, (str, bytes)) else v
              for v in vals]
    return out


def prepare_import(df, source: str, now: str | None = None, *, source_is_default: bool = False,
                   param_count: str = "given", subtract_embeddings: float | None = None,
                   untied_embeddings: bool = False, learned_positions: bool = False) -> ImportPlan:
    """Validate every row of a runs table and return the rows to insert, or raise.

    Required columns: ``n_params``, ``loss`` and at least one of ``n_tokens`` / ``flops``; a row
    missing one of the pair gets it from C = 6·N·D (flop_convention '6ND' unless given), and a
    derived count is held to the same bounds as a given one. Columns that are not run columns
    are kept per row as extras; the database's own bookkeeping columns (``INTERNAL_COLUMNS``:
    config hash and JSON, worker, lease, attempts, progress, timestamps) are refused when they
    hold a value, since an imported 'done' row with a real config hash would make sweeps skip
    training, except in a table whose header is a ``cp-plan runs export`` one
    (:func:`is_cp_plan_export`): there they are kept as extras named ``orig_<column>``, never in
    the columns that sweeps and ``train --resume`` read.

    Every row gets ``source``; with ``source_is_default`` (no ``--source`` given) a row keeps the
    table's own ``source`` value where it has one (a cp-plan export may hold 'trained').

    Parameter counts (``param_count``, one of :data:`PARAM_COUNTS`; :func:`count_params`):
    'given' takes ``n_params`` as it is; 'gpt2-12N2' or 'swiglu' derive it from ``n_embd`` and
    ``n_layer`` where it is missing. ``subtract_embeddings`` (a vocabulary size V) first takes
    :func:`embedding_params` off every given ``n_params``. A given count far above the count for
    its shape (``EMBEDDING_WARN_RATIO`` for 'given', ``1 + COUNT_TOLERANCE`` for a chosen count)
    looks embedding-inclusive, and one below ``1 - COUNT_TOLERANCE`` of a chosen count looks
    counted another way: both are imported as given and reported in ``ImportPlan.warnings``.

    A 'done' row needs a finite loss in (0, MAX_LOSS] nats/token; a 'diverged' or
    'failed' row may have none (a non-finite loss there is stored as missing). Every problem in
    the table is collected and the first few reported, naming row (1-based, header not
    counted), column and value, so one round of fixes suffices.

    Validation is column-wise (vectorized; only cells that are not plain numbers take the
    per-cell path), so memory grows with the table, not with rows × Python objects.

    Documented coercions: numeric strings become numbers, integral floats integers; a
    non-finite loss of a 'diverged'/'failed' row is stored as missing; FLOP conventions are
    per row, so a table mixing them imports each row under its own (counted in
    ``ImportPlan.flop_conventions`` and reported by ``cp-plan runs import``); the fitters
    record which conventions a fit used.
    """
    source = check_source(source)
    if param_count not in PARAM_COUNTS:
        raise CpPlanError(f"--param-count {param_count!r} is not one of {', '.join(PARAM_COUNTS)}")
    if subtract_embeddings is None and (untied_embeddings or learned_positions):
        raise CpPlanError("--untied-embeddings and --learned-positions say what --subtract-embeddings VOCAB "
                          "subtracts; give it too")
    if subtract_embeddings is not None:
        v = to_number(subtract_embeddings) if not isinstance(subtract_embeddings, bool) else None
        if v is None or not math.isfinite(v) or v < 1 or not float(v).is_integer():
            raise CpPlanError(f"--subtract-embeddings {subtract_embeddings!r} is not a vocabulary size; give the "
                              "number of tokens, e.g. --subtract-embeddings 50257 (GPT-2) or 32000 (LLaMA)")
        subtract_embeddings = int(v)
    cols = [str(c) for c in df.columns]
    if list(df.columns) != cols:  # e.g. integer column labels from an API caller
        df = df.set_axis(cols, axis=1)
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise CpPlanError(f"the table has two columns named {dup!r}; rename or drop one")
    n = len(df)
    if n == 0:
        raise CpPlanError("the table has no rows; nothing to import")
    derivable = param_count != "given" and "n_embd" in cols and "n_layer" in cols
    missing = [c for c in ("n_params", "loss") if c not in cols and not (c == "n_params" and derivable)]
    if not ("n_tokens" in cols or "flops" in cols):
        missing.append("n_tokens or flops")
    if missing:
        raise CpPlanError(f"the table lacks required column(s) {', '.join(missing)}; its columns are "
                          f"{', '.join(map(repr, cols))}; map yours with --rename, e.g. "
                          "--rename 'Model Size=n_params' --rename 'Training FLOP=flops'"
                          + ("; or derive n_params from n_embd and n_layer with --param-count gpt2-12N2 or swiglu"
                             if "n_params" in missing else ""))
    if subtract_embeddings is not None:
        for need, why in (("n_params", "the counts to subtract from"), ("n_embd", "each row's width"),
                          ("seq_len", "each row's context (--learned-positions)")):
            if need not in cols and (need != "seq_len" or learned_positions):
                raise CpPlanError(f"--subtract-embeddings needs {why}, but the table has no {need} column; "
                                  f"map one with --rename or give every row one with --set {need}=VALUE")
    export = is_cp_plan_export(cols)
    ignored, kept_internal, to_orig = [], [], {}
    for reserved in INTERNAL_COLUMNS:
        if reserved not in cols:
            continue
        structural = reserved in ("rev", "seq", "extra_json")  # never in an export
        if not structural and _missing_mask(df[reserved]).all():
            ignored.append(reserved)
        elif export and not structural:
            # A cp-plan export's bookkeeping: kept for the record under another name, so no
            # imported row ever matches a sweep's or `train --resume`'s config hash.
            if f"orig_{reserved}" in cols:  # re-export of an import: the first origin stays
                ignored.append(reserved)
            else:
                to_orig[reserved] = f"orig_{reserved}"
                kept_internal.append(reserved)
        else:
            raise CpPlanError(f"column {reserved!r} is internal to the run database (it holds sweep and "
                              f"training bookkeeping); rename it to keep it as an extra column "
                              f"(--rename {reserved}=orig_{reserved}) or drop it (a `cp-plan runs export` "
                              "file, recognised by its header, keeps such columns as orig_* extras itself)")
    if to_orig:
        df = df.rename(columns=to_orig)
        cols = [to_orig.get(c, c) for c in cols]
    cols = [c for c in cols if c not in ignored]

    problems: list[str] = []  # the first few, in the order found
    n_problems = 0
    bad_rows: set[int] = set()
    bad_cells: set[tuple[int, str]] = set()

    def bad(i: int, col: str, raw: Any, why: str) -> None:
        nonlocal n_problems
        bad_cells.add((i, col))
        bad_rows.add(i)
        n_problems += 1
        if len(problems) < 5:
            problems.append(f"row {i + 1}, column {col!r}: value {raw!r} {why}")

    known = [c for c in cols if c in RUN_COLUMN_KINDS]
    extras = tuple(c for c in cols if c not in RUN_COLUMN_KINDS)
    out: dict[str, np.ndarray] = {}
    for c in known:
        kind = RUN_COLUMN_KINDS[c]
        if c in ("loss", "train_loss"):
            out[c] = _numeric_column(c, FLOAT, df[c], bad, loss=True)
        elif kind == TEXT:
            out[c] = _text_column(c, df[c], bad)
        else:
            out[c] = _numeric_column(c, kind, df[c], bad)

    def raw_of(col: str, i: int) -> Any:
        v = df[col].iloc[i] if col in df.columns else None
        return None if _is_missing(v) else v

    # status: finished runs only
    status = out.get("status")
    if status is None:
        status = np.full(n, "done", dtype=object)
    else:
        status = np.array([s or "done" for s in status.tolist()], dtype=object)
        for i in np.nonzero(~np.isin(status, FINISHED_STATUSES))[0]:
            bad(int(i), "status", status[i], f"is not one of {', '.join(FINISHED_STATUSES)} "
                "(only finished runs can be imported" + ("; export them with --status done --status diverged "
                                                          "--status failed" if export else "") + ")")
    out["status"] = status
    is_done = status == "done"
    for c in ("loss", "train_loss"):
        if c not in out:
            continue
        x = out[c]
        nonfinite = np.isinf(x)
        for i in np.nonzero(nonfinite & is_done)[0]:
            bad(int(i), c, raw_of(c, int(i)), "is not finite (a 'done' run needs a finite loss)")
        out[c] = np.where(nonfinite, np.nan, x)  # documented coercion: a diverged run's inf loss is missing
    for i in np.nonzero(is_done & np.isnan(out["loss"]))[0]:
        if (int(i), "loss") not in bad_cells:
            bad(int(i), "loss", raw_of("loss", int(i)), "is missing (a 'done' run needs its final validation loss)")
    out["n_params"], n_derived_p, n_subtracted, count_warnings = _count_params(
        out, n, bad, bad_cells, raw_of, param_count, subtract_embeddings, untied_embeddings, learned_positions)
    for i in np.nonzero(np.isnan(out["n_params"]))[0]:
        if (int(i), "n_params") not in bad_cells:
            bad(int(i), "n_params", raw_of("n_params", int(i)),
                "is missing (every run needs its non-embedding parameters" + (
                    "; give n_embd and n_layer to derive it)" if param_count != "given" else
                    "; or give n_embd and n_layer and derive it with --param-count gpt2-12N2 or swiglu)"))
    if "source" in out and source_is_default:  # no --source: each row keeps the table's own
        srcs = out["source"].tolist()
        for i, s in enumerate(srcs):
            if s is None or not s.strip():
                srcs[i] = source
                continue
            srcs[i] = s = s.strip()
            if s == TRAINED_SOURCE and not export:
                bad(i, "source", s, f"is reserved for runs cp-plan trains (kept only from a `cp-plan runs export` "
                    "file); name the import with --source")
            elif not _SOURCE_RE.match(s):
                bad(i, "source", s, "is not a usable source name (letters, digits, '.', '_' or '-', at most 64 "
                    "characters); name the import with --source, or --rename source=orig_source")
        out["source"] = np.array(srcs, dtype=object)
    else:
        if "source" in out:
            for i, s in enumerate(out["source"].tolist()):
                if s is not None and s != source:
                    bad(i, "source", s, f"differs from --source {source!r}; keep the table's value as an "
                        "extra with --rename source=orig_source, or import under that source (leave out "
                        "--source to keep each row's own)")
        out["source"] = np.full(n, source, dtype=object)

    # counts: derive the missing one of tokens / FLOPs, and hold it to the same bounds
    nparams = out["n_params"]
    tokens = out.get("n_tokens", np.full(n, np.nan))
    flops = out.get("flops", np.full(n, np.nan))
    with np.errstate(all="ignore"):
        need_tok = ~np.isnan(nparams) & np.isnan(tokens) & ~np.isnan(flops)
        need_flops = ~np.isnan(nparams) & np.isnan(flops) & ~np.isnan(tokens)
        tokens = np.where(need_tok, flops / (6.0 * nparams), tokens)
        flops = np.where(need_flops, 6.0 * nparams * tokens, flops)
    for label, arr, derived, how in (("n_tokens", tokens, need_tok, "flops / (6*n_params)"),
                                     ("flops", flops, need_flops, "6*n_params*n_tokens")):
        with np.errstate(invalid="ignore"):
            wrong = derived & ~((arr > 0) & (arr <= MAX_COUNT) & np.isfinite(arr))
        for i in np.nonzero(wrong)[0]:
            bad(int(i), label, float(arr[i]), f"(derived as {how}) is not a positive count of at most "
                f"{MAX_COUNT:g}; check the units of n_params, n_tokens and flops")
    neither = np.isnan(tokens) & np.isnan(flops)
    for i in np.nonzero(neither)[0]:
        if (int(i), "n_tokens") not in bad_cells and (int(i), "flops") not in bad_cells:
            bad(int(i), "n_tokens", None, "and flops are both missing; give at least one")
    out["n_tokens"], out["flops"] = tokens, flops
    n_tok, n_flops = int(need_tok.sum()), int(need_flops.sum())
    conv = out.get("flop_convention", np.full(n, None, dtype=object))
    conv = np.array([c if c else None for c in conv.tolist()], dtype=object)
    conv[(conv == None) & ~np.isnan(flops)] = FLOP_CONVENTION_6ND  # noqa: E711 (element-wise)
    out["flop_convention"] = conv

    # run ids: given (unique, printable) or generated from the source and row index
    ids = out.get("run_id", np.full(n, None, dtype=object)).tolist()
    gen = [r is None and (i, "run_id") not in bad_cells for i, r in enumerate(ids)]
    n_gen = sum(gen)
    seen: dict[str, int] = {}
    for i in range(n):
        r = ids[i]
        if gen[i]:
            r = f"{out['source'][i]}-{i}"
        elif r is not None:
            r = r.strip()
            if not r or len(r) > 200 or any(ord(ch) < 32 for ch in r):
                bad(i, "run_id", raw_of("run_id", i), "is not a usable id (1 to 200 printable characters)")
        if r is not None:
            if r in seen:
                bad(i, "run_id", r, f"repeats the run_id of row {seen[r] + 1}; run ids must be unique")
            else:
                seen[r] = i
        ids[i] = r
    out["run_id"] = np.array(ids, dtype=object)

    # extras: kept per row as JSON
    extra_json = np.full(n, None, dtype=object)
    if extras:
        ex_cols = {c: _extra_column(df[c]) for c in extras}
        for i in range(n):
            extra = {}
            for c, arr in ex_cols.items():
                v = arr[i]
                if hasattr(v, "item") and np.ndim(v) == 0 and not isinstance(v, (str, bytes)):
                    v = v.item()
                if _is_missing(v) or (isinstance(v, float) and not math.isfinite(v)):
                    continue
                extra[c] = v if isinstance(v, (str, int, float, bool)) else _nested_text(v)
            if extra:
                try:
                    extra_json[i] = json.dumps(extra, sort_keys=True)
                except (TypeError, ValueError) as exc:
                    bad(i, extras[0], extra, f"cannot be stored as JSON ({exc})")
    out["extra_json"] = extra_json
    if now is not None:
        out["created_at"] = np.full(n, now, dtype=object)
        out["updated_at"] = np.full(n, now, dtype=object)

    if bad_rows:
        shown = "; ".join(problems)
        more = f"; ... and {n_problems - 5} more problem(s)" if n_problems > 5 else ""
        raise CpPlanError(f"refusing to import: {len(bad_rows)} of {n} row(s) are bad, nothing was "
                          f"imported. {shown}{more}. Fix or drop those rows and import again")
    conventions: dict[str, int] = {}
    for c in conv.tolist():
        if c:
            conventions[c] = conventions.get(c, 0) + 1
    sources: dict[str, int] = {}
    for s in out["source"].tolist():
        sources[s] = sources.get(s, 0) + 1
    return ImportPlan(source=source, columns=out, n_rows=n, derived_n_tokens=n_tok, derived_flops=n_flops,
                      generated_run_ids=n_gen, extra_columns=extras, ignored_columns=tuple(ignored),
                      flop_conventions=tuple(sorted(conventions.items())), sources=tuple(sorted(sources.items())),
                      param_count=param_count, derived_n_params=n_derived_p, subtracted_embeddings=n_subtracted,
                      kept_internal_columns=tuple(kept_internal), warnings=tuple(count_warnings))


def _as_float(a, n: int) -> np.ndarray:
    """A validated column (float64, or object of int/None) as float64 with NaN; all-NaN if absent."""
    if a is None:
        return np.full(n, np.nan)
    if a.dtype.kind == "f":
        return a
    return np.array([np.nan if v is None else float(v) for v in a.tolist()], dtype=float)


def embedding_formula(untied: bool, learned_positions: bool) -> str:
    return ("2·VOCAB·n_embd" if untied else "VOCAB·n_embd") + (" + seq_len·n_embd" if learned_positions else "")


def _count_params(out: dict, n: int, bad, bad_cells, raw_of, param_count: str, vocab: int | None,
                  untied: bool, learned_positions: bool) -> tuple[np.ndarray, int, int, list[str]]:
    """n_params after --subtract-embeddings and --param-count (see :func:`prepare_import`):
    (values, rows derived, rows with embeddings subtracted, warnings)."""
    nparams = _as_float(out.get("n_params"), n).copy()
    width, depth = _as_float(out.get("n_embd"), n), _as_float(out.get("n_layer"), n)
    given = ~np.isnan(nparams)
    n_subtracted = 0
    if vocab is not None:
        ctx = _as_float(out.get("seq_len"), n)
        emb = embedding_params(vocab, width, ctx, untied=untied, learned_positions=learned_positions)
        formula = embedding_formula(untied, learned_positions)
        for i in np.nonzero(given & np.isnan(emb))[0]:
            col = "n_embd" if np.isnan(width[i]) else "seq_len"
            if (int(i), col) not in bad_cells:
                bad(int(i), col, raw_of(col, int(i)), f"is missing; --subtract-embeddings takes {formula} off "
                    "n_params, which needs it")
        with np.errstate(invalid="ignore"):
            net = nparams - emb
        usable = given & ~np.isnan(emb)
        for i in np.nonzero(usable & ~(net > 0))[0]:
            bad(int(i), "n_params", raw_of("n_params", int(i)), f"minus {emb[i]:.6g} embedding parameters "
                f"({formula}, VOCAB {vocab}) is not positive: were the counts already non-embedding? "
                "leave out --subtract-embeddings, or check VOCAB")
        done = usable & (net > 0)
        nparams = np.where(done, net, nparams)
        n_subtracted = int(done.sum())
    known = ~np.isnan(width) & ~np.isnan(depth)
    ref_name = "gpt2-12N2" if param_count == "given" else param_count
    ref = np.full(n, np.nan)
    ref[known] = count_params(ref_name, width[known], depth[known])
    derived = np.zeros(n, dtype=bool)
    if param_count != "given":
        derived = np.isnan(nparams) & known & np.array([(i, "n_params") not in bad_cells for i in range(n)])
        nparams = np.where(derived, ref, nparams)
        for i in np.nonzero(derived & ~(nparams <= MAX_COUNT))[0]:
            bad(int(i), "n_params", float(nparams[i]), f"(derived by --param-count {param_count}) is larger than "
                f"{MAX_COUNT:g}; check n_embd and n_layer")

    warnings = []
    ok = given & known & ~np.isnan(nparams) & np.array([(i, "n_params") not in bad_cells for i in range(n)])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = nparams / ref
    high_limit = EMBEDDING_WARN_RATIO if param_count == "given" else 1 + COUNT_TOLERANCE
    high = np.nonzero(ok & (ratio > high_limit))[0]
    if high.size:
        i = int(high[0])
        excess = (nparams[i] - ref[i]) / width[i]
        example = (f"e.g. row {i + 1}: {nparams[i]:.6g} against {ref[i]:.6g} for n_embd {width[i]:g}, n_layer "
                   f"{depth[i]:g}, an excess of {excess:.0f}·n_embd")
        if vocab is not None:
            warnings.append(
                f"{high.size} of {n} row(s) still have n_params above {high_limit:g}x the {ref_name} count for "
                f"their shape after subtracting {embedding_formula(untied, learned_positions)} ({example}): "
                "check VOCAB, --untied-embeddings and --learned-positions, or --param-count")
        else:
            how = {"gpt2-12N2": "GPT-2 ties the output layer and learns positions: add --learned-positions "
                                "(needs seq_len)",
                   "swiglu": "LLaMA unties the output layer: add --untied-embeddings"}.get(
                ref_name if param_count != "given" else "",
                "add --untied-embeddings for a separate output layer and --learned-positions for learned "
                "position embeddings; if the blocks are SwiGLU (about 1.3x a GELU block at small widths), "
                "--param-count swiglu")
            warnings.append(
                f"{high.size} of {n} row(s) have n_params above {high_limit:g}x the {ref_name} count for their "
                f"shape ({example}, about the size of a vocabulary): the counts look embedding-inclusive, but "
                "cp-plan's laws take non-embedding parameters; they were imported as given. Import again with "
                f"--subtract-embeddings VOCAB ({how})")
    if param_count != "given":
        low = np.nonzero(ok & (ratio < 1 - COUNT_TOLERANCE))[0]
        if low.size:
            i = int(low[0])
            warnings.append(
                f"{low.size} of {n} row(s) have n_params below {1 - COUNT_TOLERANCE:g}x the {param_count} count "
                f"for their shape (e.g. row {i + 1}: {nparams[i]:.6g} against {ref[i]:.6g} for n_embd "
                f"{width[i]:g}, n_layer {depth[i]:g}): the source counts another way (another --param-count? "
                "grouped KV heads? no biases?); they were imported as given")
    return nparams, int(derived.sum()), n_subtracted, warnings


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
