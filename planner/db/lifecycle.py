"""RunLifecycle: a run from start to finish, its loss curve, re-opening and consistent snapshots."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import sqlalchemy as sa

from planner.errors import CpPlanError
from planner.tableio import (
    COORD_AXES,
    COORD_BOUNDS,
    COORD_COLUMN_KINDS,
    COORD_REQUIRED,
    CURVE_BOUNDS,
    CURVE_COLUMN_KINDS,
    FINISHED_STATUSES,
    RUN_COLUMN_KINDS,
    STATUSES,
    TEXT,
    TRAINED_SOURCE,
    BadValue,
    coerce_value,
)
from planner.db.queue import is_stale, local_worker_id
from planner.db.schema import next_seq, now_iso, CONFIG_COLUMNS, coord_table, curves_table, damaged, LeaseLost, runs_table


def _coerce_fields(fields: dict, kinds: dict[str, str], what: str, bounds: dict | None = None) -> dict:
    """Type-check keyword fields for a table; unknown names and bad values are errors.

    A non-finite float becomes None: SQLite cannot store NaN, and a diverged run's loss is
    described by its status and reason, not by a number."""
    out = {}
    for name, value in fields.items():
        kind = kinds.get(name)
        if kind is None:
            raise CpPlanError(f"{what}: unknown column {name!r}; known columns are {', '.join(kinds)}")
        if value is None:
            out[name] = None
            continue
        if kind == TEXT:
            if isinstance(value, (dict, list, tuple, set)):
                raise CpPlanError(f"{what}: {name}={value!r} must be text, not a {type(value).__name__}")
            out[name] = value.value if hasattr(value, "value") and isinstance(value.value, str) else str(value)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            out[name] = None
            continue
        try:
            out[name] = coerce_value(name, kind, value, **(bounds or {}))
        except BadValue as exc:
            raise CpPlanError(f"{what}: {name}={value!r} {exc}") from None
    return out


class RunLifecycle:
    """A run's life: started, updated under a lease, finished, re-opened; its curve; snapshots."""

    def _new_run_row(self, config: dict, config_hash: str, fields: dict, what: str) -> dict:
        """A runs row for a new run: shape and HP columns from ``config`` unless in ``fields``."""
        if not isinstance(config, dict):
            raise CpPlanError(f"{what}: config must be a dict (e.g. dataclasses.asdict(cfg)), not {type(config).__name__}")
        if not isinstance(config_hash, str) or not config_hash:
            raise CpPlanError(f"{what}: config_hash must be a non-empty string, not {config_hash!r}")
        try:
            config_json = json.dumps(config, sort_keys=True, default=str, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CpPlanError(f"{what}: the config cannot be stored as JSON: {exc}") from None
        for reserved in ("config_json", "config_hash", "created_at", "updated_at"):
            if reserved in fields:
                raise CpPlanError(f"{what}: {reserved!r} is set by the database, not a field")
        row = {k: config[k] for k in CONFIG_COLUMNS if config.get(k) is not None}
        row.update(fields)
        row = _coerce_fields(row, RUN_COLUMN_KINDS, what)
        missing = [k for k, v in row.items() if k not in self._run_cols and v is not None]
        if missing:
            self._need_revision(what)
        now = now_iso()
        row.update(run_id=row.get("run_id") or uuid.uuid4().hex[:12], config_hash=config_hash,
                   config_json=config_json, created_at=now, updated_at=now, rev=0,
                   seq=next_seq().scalar_subquery(), source=row.get("source") or TRAINED_SOURCE)
        return row


    def start_run(self, config: dict, config_hash: str, **fields) -> str:
        """Insert a run with status 'running' and return its run_id (uuid4 hex[:12] unless
        ``run_id`` is passed). Shape and HP columns not in ``fields`` come from ``config``;
        the whole config is stored as JSON."""
        row = self._new_run_row(config, config_hash, fields, "start_run")
        status = row.get("status") or "running"
        if status not in ("running", "pending"):
            raise CpPlanError(f"start_run: status {status!r}; a new run is 'running' (or 'pending'); "
                              "use finish_run to end it")
        row.update(status=status, worker=row.get("worker") or local_worker_id())
        try:
            with self._tx(write=True) as conn:
                conn.execute(sa.insert(runs_table).values(**row))
        except sa.exc.IntegrityError:
            raise CpPlanError(f"start_run: run_id {row['run_id']!r} already exists in {self.display}; "
                              "omit run_id to get a fresh one") from None
        return row["run_id"]


    def _check_holder(self, conn, run_id: str, holder: str | None, what: str) -> None:
        """Fencing: with ``holder``, the run must be 'running' under that worker's lease."""
        if holder is None:
            return
        cur = conn.execute(sa.select(runs_table.c.status, runs_table.c.worker)
                           .where(runs_table.c.run_id == run_id)).first()
        if cur is None or cur.status != "running" or cur.worker != holder:
            state = "is gone" if cur is None else f"is {cur.status!r} under worker {cur.worker!r}"
            raise LeaseLost(f"{what}: worker {holder} lost its claim on run {run_id!r} (the run {state}); "
                            "its lease expired while it was silent, and another worker may have taken the run")


    def _update(self, run_id: str, values: dict, what: str, require_loss: bool = False,
                holder: str | None = None) -> None:
        values = dict(values, updated_at=now_iso(), rev=runs_table.c.rev + 1)
        with self._tx(write=True) as conn:
            current = conn.execute(sa.select(runs_table.c.loss, runs_table.c.status)
                                   .where(runs_table.c.run_id == run_id)).first()
            if current is None:
                raise CpPlanError(f"{what}: no run {run_id!r} in {self.display}; `cp-plan runs list` shows the ids")
            if current.status == "done" and values.get("status", "done") != "done":
                raise CpPlanError(f"{what}: run {run_id!r} is 'done'; a finished run is never re-opened by a "
                                  f"sweep or a worker (to train it again: cp-plan runs retrain {run_id})")
            self._check_holder(conn, run_id, holder, what)
            loss = values.get("loss", current.loss)
            if require_loss and (loss is None or not math.isfinite(loss)):
                raise CpPlanError(f"{what}: run {run_id!r} cannot be 'done' without a finite final loss; "
                                  "pass loss=..., or finish it as 'diverged' or 'failed' with a reason")
            conn.execute(sa.update(runs_table).where(runs_table.c.run_id == run_id).values(**values))


    def finish_run(self, run_id: str, status: str, *, lease_holder: str | None = None, **fields) -> None:
        """End a run as 'done' (needs a finite ``loss``), 'diverged' or 'failed' (pass ``reason``).

        ``lease_holder`` (a claimed run's worker) fences the write: it raises :class:`LeaseLost`
        unless that worker still holds the run. A finished run holds no lease."""
        if status not in FINISHED_STATUSES:
            raise CpPlanError(f"finish_run: status {status!r} is not one of {', '.join(FINISHED_STATUSES)}")
        values = _coerce_fields(fields, RUN_COLUMN_KINDS, "finish_run")
        if "run_id" in values:
            raise CpPlanError("finish_run: run_id cannot change")
        values["status"] = status
        values["lease_expires_at"] = None
        self._update(run_id, values, "finish_run", require_loss=status == "done", holder=lease_holder)


    def update_run(self, run_id: str, *, lease_holder: str | None = None, **fields) -> None:
        """Change fields of a run (progress: ``step``; ``wall_s``; ...); ``lease_holder`` fences
        the write as in :meth:`finish_run`."""
        values = _coerce_fields(fields, RUN_COLUMN_KINDS, "update_run")
        for fixed in ("run_id", "created_at"):
            if fixed in values:
                raise CpPlanError(f"update_run: {fixed} cannot change")
        if "status" in values and values["status"] not in STATUSES:
            raise CpPlanError(f"update_run: status {values['status']!r} is not one of {', '.join(STATUSES)}")
        self._update(run_id, values, "update_run", require_loss=values.get("status") == "done",
                     holder=lease_holder)


    def snapshot(self, out: str | Path) -> dict:
        """A consistent copy of a SQLite run database at ``out`` (never the live file, which may
        lag its WAL while a sweep has it open): SQLite's online backup API into a temporary file
        beside ``out``, with the copy's 'running' rows marked 'failed' ("interrupted", saying
        whether the worker had stopped or was still training the source), checkpointed to one
        file (journal_mode DELETE) and moved into place atomically. Returns counts. The live
        database is not changed."""
        import sqlite3

        if self.path is None:
            raise CpPlanError(f"runs snapshot copies a SQLite database; {self.display} is {self.backend} "
                              "(use pg_dump for a server)")
        from planner.fileio import write_atomic

        out = Path(out).expanduser().absolute()
        if out == self.path:
            raise CpPlanError(f"runs snapshot: --out {out} is the database itself; give another path")
        out.parent.mkdir(parents=True, exist_ok=True)
        got: dict = {}

        def fill(tmp: str) -> None:  # the copy, written into write_atomic's temporary file
            src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                src.close()
            try:
                now = now_iso()
                rows = dst.execute("SELECT run_id, status, worker, lease_expires_at, updated_at FROM runs "
                                   "WHERE status = 'running'").fetchall()
                stale = [r[0] for r in rows if is_stale(r[1], r[2], r[3], r[4], now)]
                for r in rows:  # nobody trains a run in the copy: each running row is interrupted there
                    why = ("its worker had stopped" if r[0] in stale else
                           f"still training in {self.display} under worker {r[2]}")
                    dst.execute("UPDATE runs SET status = 'failed', lease_expires_at = NULL, reason = ? "
                                "WHERE run_id = ? AND status = 'running'",
                                (f"interrupted in this snapshot ({why} when it was taken); resumable from its "
                                 "checkpoint", r[0]))
                dst.commit()
                dst.execute("PRAGMA journal_mode=DELETE")
                counts = dict(dst.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
            if check != "ok":
                raise CpPlanError(f"runs snapshot: the copy failed its integrity check ({check}); nothing written")
            got.update(runs=counts, rows=rows, stale=stale)

        try:  # atomic; an existing target keeps its mode; devices, FIFOs and sockets are refused
            out = write_atomic(out, fill, mode=0o644)
        except sqlite3.Error as exc:
            raise damaged(self.display, f"copying it failed ({exc})", fix="check that it is a cp-plan run database") from None
        counts, rows, stale = got["runs"], got["rows"], got["stale"]
        return {"out": str(out), "runs": counts, "marked_interrupted": len(rows),
                "of_stopped_workers": len(stale), "of_live_workers": len(rows) - len(stale)}


    def reopen_run(self, run_id: str) -> dict:
        """The one way to re-open a 'done', 'diverged' or 'failed' run: mark it 'pending' (no
        worker, no lease, no attempts) so that the next sweep holding its config trains it again.
        A user's action (``cp-plan runs retrain``); no claim, lease expiry or heartbeat does this.
        Returns the run as it was."""
        self._need_revision("reopen_run")
        before = self.get_run(run_id)
        if before["status"] in ("running", "pending"):
            raise CpPlanError(f"runs retrain: run {before['run_id']!r} is {before['status']!r} already; "
                              "only a finished run ('done', 'diverged' or 'failed') can be re-opened")
        c = runs_table.c
        with self._tx(write=True) as conn:
            res = conn.execute(sa.update(runs_table).where(c.run_id == before["run_id"], c.status == before["status"])
                               .values(status="pending", worker=None, lease_expires_at=None, attempts=0,
                                       reason=f"re-opened by the user (was {before['status']!r})",
                                       updated_at=now_iso(), rev=c.rev + 1))
            if res.rowcount != 1:
                raise CpPlanError(f"runs retrain: run {before['run_id']!r} changed while re-opening it; retry")
        return before


    def fail_stale_runs(self, config_hash: str, reason: str = "crashed") -> list[str]:
        """Mark this config's abandoned 'running' rows 'failed' and return their run_ids.

        A row is abandoned when its lease expired, its worker process on this host is gone, or
        (no lease) it has been silent for NO_LEASE_STALE_S (see ``is_stale``). A killed
        ``cp-plan train`` leaves such a row; a fresh run of the same config calls this so the
        database does not show it 'running' forever. The reason names the worker and the last
        heartbeat."""
        c = runs_table.c
        done = []
        with self._tx(write=True) as conn:
            now = now_iso()
            rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at)
                                .where(c.config_hash == config_hash, c.status == "running")).all()
            for r in rows:
                if not is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now):
                    continue
                why = (f"{reason}: worker {r.worker or '?'} stopped (last heartbeat {r.updated_at}"
                       + (f", lease expired {r.lease_expires_at}" if r.lease_expires_at else "")
                       + "); a later run of the same config took over")
                res = conn.execute(sa.update(runs_table).where(
                    c.run_id == r.run_id, c.status == "running", c.updated_at == r.updated_at).values(
                    status="failed", reason=why, lease_expires_at=None, updated_at=now, rev=c.rev + 1))
                if res.rowcount == 1:
                    done.append(r.run_id)
        return done


    def add_curve(self, run_id: str, rows: list[dict], *, lease_holder: str | None = None) -> None:
        """Append loss-curve points (dicts with ``step`` and any of n_tokens, train_loss,
        val_loss, lr, tokens_per_s, wall_s, grad_norm). A step already stored is replaced, so a
        resumed run can re-log the steps after its checkpoint. ``lease_holder`` fences the write."""
        by_step: dict[int, dict] = {}
        for r in rows:
            if not isinstance(r, dict):
                raise CpPlanError(f"add_curve: each row must be a dict, not {type(r).__name__}")
            clean = _coerce_fields(r, CURVE_COLUMN_KINDS, "add_curve", CURVE_BOUNDS)
            if clean.get("step") is None:
                raise CpPlanError(f"add_curve: row {r!r} has no step")
            by_step[clean["step"]] = {**dict.fromkeys(CURVE_COLUMN_KINDS), **clean, "run_id": run_id}
        if not by_step:
            return
        steps = list(by_step)
        try:
            with self._tx(write=True) as conn:
                self._check_holder(conn, run_id, lease_holder, "add_curve")
                for i in range(0, len(steps), 500):
                    conn.execute(sa.delete(curves_table).where(curves_table.c.run_id == run_id,
                                                               curves_table.c.step.in_(steps[i:i + 500])))
                conn.execute(sa.insert(curves_table), list(by_step.values()))
        except sa.exc.IntegrityError:
            raise CpPlanError(f"add_curve: no run {run_id!r} in {self.display}; start_run first") from None


    def add_coord_rows(self, rows: list[dict]) -> None:
        """Store coordinate-check rows (one per parameterization, shape and step)."""
        clean_rows = []
        now = now_iso()
        for r in rows:
            clean = _coerce_fields(r, COORD_COLUMN_KINDS, "add_coord_rows", COORD_BOUNDS)
            missing = [c for c in COORD_REQUIRED if clean.get(c) is None]
            if missing:
                raise CpPlanError(f"add_coord_rows: row {r!r} lacks {', '.join(missing)}")
            if clean["axis"] not in COORD_AXES:
                raise CpPlanError(f"add_coord_rows: axis {clean['axis']!r} is not one of {', '.join(COORD_AXES)}")
            clean_rows.append({**dict.fromkeys(COORD_COLUMN_KINDS), **clean, "created_at": clean.get("created_at") or now})
        if clean_rows:
            with self._tx(write=True) as conn:
                conn.execute(sa.insert(coord_table), clean_rows)
