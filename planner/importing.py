"""The import pipeline: a table of published runs becomes rows the run database can insert, or
is refused whole (:func:`prepare_import`), with every problem reported at once.

Counts (``n_params``, ``n_tokens``, ``flops``) are floats: published data gives fractional
values (Epoch's points are read off an SVG), FLOPs of real models overflow int64, and a double
holds every integer count below 2**53 exactly. When a table gives only one of tokens and FLOPs
the other is derived with the 6ND approximation, C = 6·N·D (Kaplan et al. 2020, eq. 2.1;
Hoffmann et al. 2022 use it for Chinchilla's budgets), and the row's ``flop_convention`` is
'6ND' unless the table names one. Column names, coercion and file reading live in
:mod:`planner.tableio`; no sqlalchemy here either.

:func:`prepare_import` is a short list of steps (options, header, typed columns, status and loss,
parameter counts, sources, tokens and FLOPs, run ids, extras), each reporting into one
:class:`Problems` collector. (Near 700 lines: every column rule of an import kept in one file.)
"""

from __future__ import annotations

import json
from collections import Counter
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from planner.errors import CpPlanError
from planner.shapes import FLOP_CONVENTION_6ND
from planner.tableio import (
    FLOAT,
    INT,
    TEXT,
    _COUNTS,
    _is_missing,
    nested_text,
    _NON_NEGATIVE,
    _POSITIVE,
    _SOURCE_RE,
    BadValue,
    coerce_value,
    count_params,
    COUNT_TOLERANCE,
    embedding_formula,
    embedding_params,
    EMBEDDING_WARN_RATIO,
    FINISHED_STATUSES,
    INTERNAL_COLUMNS,
    is_cp_plan_export,
    MAX_COUNT,
    MAX_INT,
    MAX_LOSS,
    PARAM_COUNTS,
    RUN_COLUMN_KINDS,
    to_number,
    TRAINED_SOURCE,
)


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


class Problems:
    """The one collector of an import's problems: every bad cell is counted and the first few are
    kept as messages naming row (1-based, header not counted), column and value, in the order
    found; :meth:`raise_if_any` refuses the whole table with them, so one round of fixes suffices.
    Called as ``problems(i, column, raw, why)``."""

    SHOWN = 5

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0
        self.rows: set[int] = set()
        self.cells: set[tuple[int, str]] = set()

    def __call__(self, i: int, col: str, raw: Any, why: str) -> None:
        self.cells.add((i, col))
        self.rows.add(i)
        self.count += 1
        if len(self.messages) < self.SHOWN:
            self.messages.append(f"row {i + 1}, column {col!r}: value {raw!r} {why}")

    def raise_if_any(self, n: int) -> None:
        if not self.rows:
            return
        more = f"; ... and {self.count - self.SHOWN} more problem(s)" if self.count > self.SHOWN else ""
        raise CpPlanError(f"refusing to import: {len(self.rows)} of {n} row(s) are bad, nothing was "
                          f"imported. {'; '.join(self.messages)}{more}. Fix or drop those rows and import again")


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
    source, subtract_embeddings = _check_options(source, param_count, subtract_embeddings, untied_embeddings,
                                                 learned_positions)
    df, cols, export, ignored, kept_internal = _check_header(df, param_count, subtract_embeddings, learned_positions)
    n = len(df)
    bad = Problems()

    def raw_of(col: str, i: int) -> Any:
        v = df[col].iloc[i] if col in df.columns else None
        return None if _is_missing(v) else v

    out, extras = _typed_columns(df, cols, bad)
    _status_and_loss(out, n, bad, raw_of, export)
    out["n_params"], n_derived_p, n_subtracted, count_warnings = _count_params(
        out, n, bad, bad.cells, raw_of, param_count, subtract_embeddings, untied_embeddings, learned_positions)
    for i in np.nonzero(np.isnan(out["n_params"]))[0]:
        if (int(i), "n_params") not in bad.cells:
            bad(int(i), "n_params", raw_of("n_params", int(i)),
                "is missing (every run needs its non-embedding parameters" + (
                    "; give n_embd and n_layer to derive it)" if param_count != "given" else
                    "; or give n_embd and n_layer and derive it with --param-count gpt2-12N2 or swiglu)"))
    _sources(out, n, source, source_is_default, export, bad)
    n_tok, n_flops = _tokens_and_flops(out, n, bad)
    n_gen = _run_ids(out, n, bad, raw_of)
    out["extra_json"] = _extras(df, extras, n, bad)
    if now is not None:
        out["created_at"] = np.full(n, now, dtype=object)
        out["updated_at"] = np.full(n, now, dtype=object)
    bad.raise_if_any(n)
    conventions = Counter(c for c in out["flop_convention"].tolist() if c)
    sources = Counter(out["source"].tolist())
    return ImportPlan(source=source, columns=out, n_rows=n, derived_n_tokens=n_tok, derived_flops=n_flops,
                      generated_run_ids=n_gen, extra_columns=extras, ignored_columns=tuple(ignored),
                      flop_conventions=tuple(sorted(conventions.items())), sources=tuple(sorted(sources.items())),
                      param_count=param_count, derived_n_params=n_derived_p, subtracted_embeddings=n_subtracted,
                      kept_internal_columns=tuple(kept_internal), warnings=tuple(count_warnings))


def _check_options(source, param_count: str, subtract_embeddings, untied: bool, learned_positions: bool):
    """The import's options, checked: (source, vocabulary to subtract or None)."""
    source = check_source(source)
    if param_count not in PARAM_COUNTS:
        raise CpPlanError(f"--param-count {param_count!r} is not one of {', '.join(PARAM_COUNTS)}")
    if subtract_embeddings is None and (untied or learned_positions):
        raise CpPlanError("--untied-embeddings and --learned-positions say what --subtract-embeddings VOCAB "
                          "subtracts; give it too")
    if subtract_embeddings is not None:
        v = to_number(subtract_embeddings) if not isinstance(subtract_embeddings, bool) else None
        if v is None or not math.isfinite(v) or v < 1 or not float(v).is_integer():
            raise CpPlanError(f"--subtract-embeddings {subtract_embeddings!r} is not a vocabulary size; give the "
                              "number of tokens, e.g. --subtract-embeddings 50257 (GPT-2) or 32000 (LLaMA)")
        subtract_embeddings = int(v)
    return source, subtract_embeddings


def _check_header(df, param_count: str, subtract_embeddings, learned_positions: bool):
    """The table's columns, checked as a whole: names unique, rows present, required columns there,
    internal columns refused (or, in a cp-plan export, renamed orig_*). Returns (df, columns,
    is an export, ignored columns, kept internal columns)."""
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
    return df, cols, export, ignored, kept_internal


def _typed_columns(df, cols: list[str], bad: Problems) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Each run column as a typed array (bad cells reported); the other columns' names (extras)."""
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
    return out, extras


def _status_and_loss(out: dict, n: int, bad: Problems, raw_of, export: bool) -> None:
    """Only finished runs; a 'done' run needs a finite loss (a diverged run's inf loss is missing)."""
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
        if (int(i), "loss") not in bad.cells:
            bad(int(i), "loss", raw_of("loss", int(i)), "is missing (a 'done' run needs its final validation loss)")


def _sources(out: dict, n: int, source: str, source_is_default: bool, export: bool, bad: Problems) -> None:
    """Every row's source: --source, or (none given) the table's own where it has one."""
    if "source" in out and source_is_default:  # no --source: each row keeps the table's own
        srcs = out["source"].tolist()
        for i, s in enumerate(srcs):
            if s is None or not s.strip():
                srcs[i] = source
                continue
            srcs[i] = s = s.strip()
            if s == TRAINED_SOURCE and not export:
                bad(i, "source", s, "is reserved for runs cp-plan trains (kept only from a `cp-plan runs export` "
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


def _tokens_and_flops(out: dict, n: int, bad: Problems) -> tuple[int, int]:
    """Derive the missing one of tokens and FLOPs (C = 6·N·D), hold it to the same bounds, and set
    each row's FLOP convention; returns (rows with tokens derived, rows with FLOPs derived)."""
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
        if (int(i), "n_tokens") not in bad.cells and (int(i), "flops") not in bad.cells:
            bad(int(i), "n_tokens", None, "and flops are both missing; give at least one")
    out["n_tokens"], out["flops"] = tokens, flops
    conv = out.get("flop_convention", np.full(n, None, dtype=object))
    conv = np.array([c if c else None for c in conv.tolist()], dtype=object)
    conv[(conv == None) & ~np.isnan(flops)] = FLOP_CONVENTION_6ND  # noqa: E711 (element-wise)
    out["flop_convention"] = conv
    return int(need_tok.sum()), int(need_flops.sum())


def _run_ids(out: dict, n: int, bad: Problems, raw_of) -> int:
    """Run ids: given (unique, printable) or generated from the source and row index; returns how
    many were generated."""
    # run ids: given (unique, printable) or generated from the source and row index
    ids = out.get("run_id", np.full(n, None, dtype=object)).tolist()
    gen = [r is None and (i, "run_id") not in bad.cells for i, r in enumerate(ids)]
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
    return n_gen


def _extras(df, extras: tuple[str, ...], n: int, bad: Problems) -> np.ndarray:
    """The other columns, kept per row as JSON text (nested values as JSON, not repr)."""
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
                extra[c] = v if isinstance(v, (str, int, float, bool)) else nested_text(v)
            if extra:
                try:
                    extra_json[i] = json.dumps(extra, sort_keys=True)
                except (TypeError, ValueError) as exc:
                    bad(i, extras[0], extra, f"cannot be stored as JSON ({exc})")
    return extra_json


def _as_float(a, n: int) -> np.ndarray:
    """A validated column (float64, or object of int/None) as float64 with NaN; all-NaN if absent."""
    if a is None:
        return np.full(n, np.nan)
    if a.dtype.kind == "f":
        return a
    return np.array([np.nan if v is None else float(v) for v in a.tolist()], dtype=float)




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

