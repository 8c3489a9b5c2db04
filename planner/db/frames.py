"""Typed frames from query results: stored columns become float64/int64/object arrays, chunk by chunk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from planner.tableio import (
    FLOAT,
    INT,
    RUN_COLUMN_KINDS,
    RUN_COLUMNS,
    TEXT,
)
from planner.db.schema import short_value, damaged, stored_json


def typed_frame(rows, kinds: dict[str, str], columns: list[str] | None = None) -> pd.DataFrame:
    columns = columns or list(kinds)
    df = pd.DataFrame.from_records([dict(r) for r in rows], columns=columns)
    for c in columns:
        kind = kinds.get(c)
        if kind == FLOAT or (kind == INT and df[c].isna().any()):
            df[c] = pd.to_numeric(df[c]).astype("float64")
        elif kind == INT:
            df[c] = df[c].astype("int64")
    return df


READ_CHUNK_ROWS = 50_000  # rows fetched and converted at a time by RunDB.runs


def read_runs_frame(result, reverse: bool = False, chunk_rows: int | None = None,
                     display: str = "the run database") -> pd.DataFrame:
    """The runs of a query result as RunDB.runs's frame, built column by column: rows are fetched
    ``chunk_rows`` at a time and each chunk becomes one typed array per column, so a million runs
    cost their arrays, not a million dicts (5.4 GB before, for the 1M-row fit of
    bench/scale_bench.py). Columns: RUN_COLUMNS in order (FLOAT float64; INT int64, or float64
    with NaN when some runs lack it; TEXT object with None), then the imported extras in order of
    first appearance. ``reverse`` turns the row order around (a descending LIMIT query)."""
    chunk_rows = chunk_rows or READ_CHUNK_ROWS
    names = list(result.keys())
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names if name not in ("rev", "seq", "extra_json")}
    extra_rows: list[int] = []
    extra_dicts: list[dict] = []
    n = 0
    while True:
        chunk = result.fetchmany(chunk_rows)
        if not chunk:
            break
        ids = [row[names.index("run_id")] for row in chunk] if "run_id" in names else [None] * len(chunk)
        for name, values in zip(names, zip(*chunk)):
            if name in parts:
                parts[name].append(_column_chunk(RUN_COLUMN_KINDS[name], values, name, ids, display))
            elif name == "extra_json":
                for i, text in enumerate(values):
                    if text:
                        extra = stored_json(text, "extra_json", ids[i], display)
                        if extra is not None and not isinstance(extra, dict):
                            raise damaged(display, f"run {ids[i]!r} has extra_json {short_value(extra)}, "
                                                   "not a JSON object")
                        if extra:
                            extra_rows.append(n + i)
                            extra_dicts.append(extra)
        n += len(chunk)
    data = {}
    for name in RUN_COLUMNS:
        kind = RUN_COLUMN_KINDS[name]
        if name not in parts:  # a column an older schema revision lacks: all missing
            data[name] = np.full(n, np.nan) if kind != TEXT else np.full(n, np.nan, dtype=object)
        elif not parts[name]:
            data[name] = np.empty(0, dtype={FLOAT: np.float64, INT: np.int64, TEXT: object}[kind])
        else:
            data[name] = np.concatenate(parts[name]) if len(parts[name]) > 1 else parts[name][0]
        if reverse:
            data[name] = data[name][::-1]
    parts.clear()
    df = pd.DataFrame(data, columns=list(RUN_COLUMNS), copy=False)
    if extra_dicts:
        order: dict[str, None] = {}
        for e in extra_dicts:
            order.update(dict.fromkeys(e))
        rows = np.asarray(extra_rows)
        ex = pd.DataFrame.from_records(extra_dicts, columns=list(order), index=(n - 1 - rows) if reverse else rows)
        ex = ex.sort_index() if reverse else ex
        if len(ex) < n:
            ex = ex.reindex(range(n))
        df = pd.concat([df, ex.reset_index(drop=True)], axis=1)
    return df


def _column_chunk(kind: str, values: tuple, name: str = "?", ids: list | None = None,
                  display: str = "the run database") -> np.ndarray:
    """One chunk of a stored column as a typed array: float64 (None → NaN) for FLOAT, int64 for
    INT (float64 with NaN if the chunk has a missing value), object for TEXT. A value of the
    wrong type (text or bytes in a number column, an integer beyond 64 bits) is a damaged
    database, named by its run and column."""
    try:
        return _typed_chunk(kind, values)
    except (TypeError, ValueError, OverflowError):
        for i, v in enumerate(values):
            try:
                _typed_chunk(kind, (v,))
            except (TypeError, ValueError, OverflowError):
                rid = ids[i] if ids else None
                raise damaged(display, f"run {rid!r} has {name} = {short_value(v)}, not a "
                                       f"{'number' if kind == FLOAT else 'whole number'}") from None
        raise


def _typed_chunk(kind: str, values: tuple) -> np.ndarray:
    if kind == FLOAT:
        return np.array(values, dtype=np.float64)
    if kind == INT:
        if None in values:
            return np.array(values, dtype=np.float64)
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def curve_summary(curve: pd.DataFrame) -> dict:
    """What `runs show` reports about a loss curve: its extent, last and best validation loss."""
    out: dict[str, Any] = {"n_points": int(len(curve))}
    if len(curve) == 0:
        return out
    out.update(first_step=int(curve["step"].iloc[0]), last_step=int(curve["step"].iloc[-1]))
    for col in ("n_tokens", "train_loss", "val_loss", "lr"):
        s = curve[col].dropna()
        out[f"last_{col}"] = float(s.iloc[-1]) if len(s) else None
    val = curve.dropna(subset=["val_loss"])
    if len(val):
        best = val["val_loss"].idxmin()
        out.update(min_val_loss=float(val.loc[best, "val_loss"]), min_val_loss_step=int(val.loc[best, "step"]))
    return out
