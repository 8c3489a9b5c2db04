"""RunQueries: reading runs back (filters in SQL, extras after), curves, counts, fingerprint; imports."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pandas as pd
import sqlalchemy as sa

from planner.errors import CpPlanError
from planner.tableio import (
    COORD_COLUMN_KINDS,
    CURVE_COLUMN_KINDS,
    INT,
    RUN_COLUMN_KINDS,
    RUN_COLUMNS,
    STATUSES,
    TEXT,
    WHERE_OPERATORS,
)
from planner.importing import ImportPlan, prepare_import
from planner.db.frames import read_runs_frame, typed_frame
from planner.db.schema import next_seq, now_iso, short_value, coord_table, curves_table, damaged, meta_table, runs_table, stored_json


def _parse_number(v: Any, kind: str) -> float | int:
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{v!r} is not finite")
    return int(x) if kind == INT and x.is_integer() else x


_SQL_OPS = {"!=": lambda c, v: c != v, "<": lambda c, v: c < v, "<=": lambda c, v: c <= v,
            ">": lambda c, v: c > v, ">=": lambda c, v: c >= v}


_PD_OPS = {"=": lambda s, v: s == v, **_SQL_OPS}


def _where_terms(where) -> dict[str, list[tuple[str, Any]]]:
    """``RunDB.runs``'s ``where`` (a dict of equalities, or (column, op, value) terms) grouped by
    column: {column: [(op, value), ...]}, value None meaning missing."""
    out: dict[str, list[tuple[str, Any]]] = {}
    if isinstance(where, dict):
        for col, value in where.items():
            for v in (list(value) if isinstance(value, (list, tuple, set)) else [value]):
                out.setdefault(col, []).append(("=", None if v is None or v == "null" else v))
        return out
    for term in where or ():
        col, op, v = term
        if op not in WHERE_OPERATORS:
            raise CpPlanError(f"where {col}{op}{v}: operator {op!r} is not one of {', '.join(WHERE_OPERATORS)}")
        if v is None and op not in ("=", "!="):
            raise CpPlanError(f"where {col}{op}null: null (missing) goes with = or != only")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a byte the terminal could not decode (surrogate-escaped)
                raise CpPlanError(f"where {col}{op}{v.encode('utf-8', 'surrogateescape')!r}: the value is not "
                                  "UTF-8 text; type it in UTF-8") from None
        out.setdefault(col, []).append((op, v))
    return out


def _extra_mask(s: pd.Series, terms: list[tuple[str, Any]]):
    """Rows of an imported extra column that satisfy ``terms`` (as in ``RunDB.runs``): numbers
    compare as numbers where both sides are numeric, otherwise as text."""
    num = pd.to_numeric(s, errors="coerce")
    text = s.astype(str)
    present = s.notna()

    def test(op: str, v):
        if v is None:
            return ~present if op == "=" else present
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = None
        by_text = present & _PD_OPS[op](text, str(v))
        if x is None or not math.isfinite(x):
            return by_text
        by_num = num.notna() & _PD_OPS[op](num, x)
        # a cell that is not a number (text in a mostly numeric column) compares as text
        return by_num | (present & num.isna() & by_text) if op != "=" else by_num | by_text

    either = [test(op, v) for op, v in terms if op == "="]
    mask = pd.Series(True, index=s.index)
    if either:
        mask &= pd.concat(either, axis=1).any(axis=1)
    for op, v in terms:
        if op != "=":
            mask &= test(op, v)
    return mask.to_numpy(dtype=bool)


class RunQueries:
    """Reading runs back: filtered frames, one run, curves, counts and the fingerprint; imports."""

    def import_frame(self, df: pd.DataFrame, source: str) -> int:
        """Validate a table of published runs and insert all its rows in one transaction, or
        none (see :func:`planner.importing.prepare_import`). Returns the number imported."""
        return self.import_plan(prepare_import(df, source, now=now_iso()))


    def import_plan(self, plan: ImportPlan, chunk_rows: int = 5000) -> int:
        """Insert validated rows in one transaction, ``chunk_rows`` at a time (memory stays
        bounded for any table size); any run_id already present refuses all."""
        missing = set(RUN_COLUMNS) - self._run_cols
        if missing and any(c in plan.columns and any(v is not None and v == v for v in plan.columns[c])
                           for c in missing):
            self._need_revision("import")
        now = now_iso()
        ids = plan.run_ids
        try:
            with self._tx(write=True) as conn:
                taken = []
                for i in range(0, len(ids), 500):
                    taken += conn.execute(sa.select(runs_table.c.run_id)
                                          .where(runs_table.c.run_id.in_(ids[i:i + 500]))).scalars().all()
                if taken:
                    first = sorted(taken)[0]
                    raise CpPlanError(
                        f"refusing to import: {len(taken)} run_id(s) already in {self.display}, e.g. "
                        f"{first!r} (row {ids.index(first) + 1}); nothing was imported. "
                        "Was this table imported before? Use another --source, or give the rows new run_ids")
                seq = conn.execute(next_seq()).scalar()
                template = {**dict.fromkeys(RUN_COLUMNS), "extra_json": None, "rev": 0}
                for chunk in plan.chunks(chunk_rows):
                    rows = []
                    for r in chunk:
                        row = {**template, **r, "seq": seq}
                        seq += 1
                        row["created_at"] = row["created_at"] or now
                        row["updated_at"] = row["updated_at"] or now
                        if missing:
                            for c in missing:
                                row.pop(c, None)
                        rows.append(row)
                    conn.execute(sa.insert(runs_table), rows)
        except sa.exc.IntegrityError as exc:  # a concurrent writer took an id after our check
            raise CpPlanError(f"refusing to import: a run_id collided with a concurrent write "
                              f"({str(exc.orig).splitlines()[0]}); nothing was imported, retry") from None
        return plan.n_rows


    def find_done(self, config_hash: str) -> str | None:
        """The run_id of the latest 'done' run with this config hash, else None (sweep resume)."""
        with self._tx() as conn:
            return conn.execute(
                sa.select(runs_table.c.run_id)
                .where(runs_table.c.config_hash == config_hash, runs_table.c.status == "done")
                .order_by(runs_table.c.updated_at.desc()).limit(1)).scalar()


    def runs(self, where: dict | list | None = None,
             statuses: tuple[str, ...] | list[str] | str | None = ("done",),
             limit: int | None = None) -> pd.DataFrame:
        """Runs as a DataFrame: canonical columns, then the extra run columns, then any columns
        imported tables brought along. Float columns are float64; integer columns int64, or
        float64 with NaN when some runs lack them. ``where`` maps a column to a value (strings
        are parsed for numeric columns), a list of values, or None (missing); or it is a list of
        ``(column, op, value)`` terms (:func:`planner.tableio.parse_where`, op one of
        ``WHERE_OPERATORS``): equalities on one column mean either, every other term must hold,
        and a missing value matches no comparison. Terms on stored run columns are part of the
        SQL query; those on imported extras filter after it.
        ``statuses=None`` returns every status; ``limit`` keeps only the last N matching runs
        (in the query itself, so a large database is not read whole)."""
        q = self._runs_select()
        if statuses is not None:
            statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
            unknown = [s for s in statuses if s not in STATUSES]
            if unknown:
                raise CpPlanError(f"status {unknown[0]!r} is not one of {', '.join(STATUSES)}")
            q = q.where(runs_table.c.status.in_(statuses))
        post: dict[str, list] = {}  # extra column -> [(op, value)]
        for col, terms in _where_terms(where).items():
            if col not in RUN_COLUMN_KINDS:
                post[col] = terms
                continue
            kind, c = RUN_COLUMN_KINDS[col], runs_table.c[col]
            either, every = [], []
            for op, v in terms:
                if v is not None and kind != TEXT:
                    try:
                        v = _parse_number(v, kind)
                    except (TypeError, ValueError, OverflowError):
                        raise CpPlanError(f"where {col}{op}{v!r}: {col} is numeric; give a number, "
                                          f"e.g. {col}{op}1e6") from None
                    if isinstance(v, int) and abs(v) >= 2 ** 63:  # beyond SQLite's integers: compare as a float
                        v = float(v)
                elif v is not None:
                    v = str(v)
                if op == "=":
                    either.append(c.is_(None) if v is None else c == v)
                else:
                    every.append(c.is_not(None) if v is None else _SQL_OPS[op](c, v))
            if either:
                q = q.where(sa.or_(*either))
            for cond in every:
                q = q.where(cond)
        if limit is not None and limit < 0:
            raise CpPlanError(f"limit={limit} must be >= 0 (0 or None: all runs)")
        if limit and not post:  # columns kept in extra_json filter after the query: limit after them
            q = q.order_by(runs_table.c.seq.desc(), runs_table.c.run_id.desc()).limit(limit)
            with self._tx() as conn:
                df = read_runs_frame(conn.execute(q), reverse=True, display=self.display)
        else:
            q = q.order_by(runs_table.c.seq, runs_table.c.run_id)
            with self._tx() as conn:
                df = read_runs_frame(conn.execute(q), display=self.display)
        for col, terms in post.items():
            if col not in df.columns:
                raise CpPlanError(f"unknown column {col!r}; run columns are {', '.join(RUN_COLUMNS)}"
                                  + (f", plus imported {', '.join(c for c in df.columns if c not in RUN_COLUMN_KINDS)}"
                                     if len(df.columns) > len(RUN_COLUMNS) else ""))
            df = df[_extra_mask(df[col], terms)].reset_index(drop=True)
        if limit and post:
            df = df.tail(limit).reset_index(drop=True)
        return df


    def _resolve_id(self, conn, run_id: str) -> str:
        if conn.execute(sa.select(runs_table.c.run_id).where(runs_table.c.run_id == run_id)).first():
            return run_id
        matches = conn.execute(sa.select(runs_table.c.run_id)
                               .where(runs_table.c.run_id.startswith(run_id, autoescape=True)).limit(3)).scalars().all()
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise CpPlanError(f"no run {run_id!r} in {self.display}; `cp-plan runs list` shows the ids")
        raise CpPlanError(f"run id prefix {run_id!r} is ambiguous ({', '.join(matches[:2])}, ...); give more characters")


    def get_run(self, run_id: str) -> dict:
        """One run as a dict: every column, imported extras, and ``config`` (the parsed
        config_json, or None). A unique prefix of the run_id is enough."""
        with self._tx() as conn:
            rid = self._resolve_id(conn, run_id)
            row = dict(conn.execute(self._runs_select().where(runs_table.c.run_id == rid)).mappings().one())
        row.pop("rev")
        row.pop("seq")
        extra = stored_json(row.pop("extra_json"), "extra_json", rid, self.display) or {}
        if not isinstance(extra, dict):
            raise damaged(self.display, f"run {rid!r} has extra_json {short_value(extra)}, not a JSON object")
        out = {c: row.get(c) for c in RUN_COLUMNS}
        out.update(extra)
        out["config"] = stored_json(row["config_json"], "config_json", rid, self.display)
        return out


    def curve(self, run_id: str) -> pd.DataFrame:
        """A run's loss curve, one row per logged step, in step order."""
        with self._tx() as conn:
            rid = self._resolve_id(conn, run_id)
            rows = conn.execute(sa.select(curves_table).where(curves_table.c.run_id == rid)
                                .order_by(curves_table.c.step)).mappings().all()
        return typed_frame(rows, CURVE_COLUMN_KINDS)


    def coord_rows(self, where: dict | None = None) -> pd.DataFrame:
        """Coordinate-check rows, in insertion order; ``where`` maps columns to values."""
        q = sa.select(*[coord_table.c[c] for c in COORD_COLUMN_KINDS])
        for col, value in (where or {}).items():
            if col not in COORD_COLUMN_KINDS:
                raise CpPlanError(f"unknown coordinate-check column {col!r}; known: {', '.join(COORD_COLUMN_KINDS)}")
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            q = q.where(coord_table.c[col].in_(values))
        with self._tx() as conn:
            rows = conn.execute(q.order_by(coord_table.c.id)).mappings().all()
        return typed_frame(rows, COORD_COLUMN_KINDS)


    def count(self, statuses: tuple[str, ...] | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(runs_table)
        if statuses is not None:
            q = q.where(runs_table.c.status.in_(statuses))
        with self._tx() as conn:
            return int(conn.execute(q).scalar())


    def fingerprint(self) -> str:
        """A short hash that changes whenever any run is inserted or updated (the law cache
        key): database id, row count, sum of per-row revision counters, latest update time."""
        with self._tx() as conn:
            n, revs, last = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(runs_table.c.rev), 0),
                                                   sa.func.max(runs_table.c.updated_at))).one()
            db_id = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "db_id")).scalar()
        return hashlib.sha256(f"{db_id}|{n}|{revs}|{last}".encode()).hexdigest()[:16]
