"""RunQueue: sweeps' work queue. One pure rule (queue_state) decides for enqueue, claim and queue_status."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from datetime import datetime, timedelta

import sqlalchemy as sa

from planner.errors import CpPlanError
from planner.db.schema import iso_in, now_iso, runs_table


DEFAULT_LEASE_S = 300.0  # a claimed run is re-claimable this long after its worker's last renewal


DEFAULT_MAX_ATTEMPTS = 2  # claims per run and sweep: a failed or abandoned run is retried once


# A 'running' row without a lease (cp-plan train, or an older cp-plan's sweep) writes its progress
# every few seconds; one silent this long, or whose process on this host is gone, is abandoned.
NO_LEASE_STALE_S = 3600.0


def local_worker_id() -> str:
    """``host:pid`` of this process: the ``worker`` recorded with the runs it writes or claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _local_worker_gone(worker: str | None) -> bool:
    """Whether ``worker`` (host:pid) is a process on this host that no longer exists (or is a
    zombie). Another host's worker, or an unparsable one, is never known to be gone."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_stale(status: str, worker: str | None, lease: str | None, updated_at: str | None, now: str) -> bool:
    """A 'running' row nobody is training any more: its lease expired, its local process is gone,
    or (no lease) it has been silent for NO_LEASE_STALE_S."""
    if status != "running":
        return False
    if _local_worker_gone(worker):
        return True
    if lease is not None:
        return lease < now
    cutoff = (datetime.fromisoformat(now) - timedelta(seconds=NO_LEASE_STALE_S)).isoformat(timespec="microseconds")
    return (updated_at or "") < cutoff


def queue_state(status: str, attempts: int | None, stale: bool, max_attempts: int) -> str:
    """Where one run row stands in the queue (pure; ``stale``: a 'running' row nobody trains any
    more, :func:`is_stale`): 'done' or 'diverged' (finished); 'running' (a live worker holds
    it); 'claimable' (pending; failed or abandoned with attempts left); 'abandoned' (abandoned
    with its attempts used up: to be marked failed); 'failed' (its attempts used up). Enqueue,
    claim and queue_status all decide from it."""
    tries = attempts or 0
    if status in ("done", "diverged"):
        return status
    if status == "running":
        if not stale:
            return "running"
        return "claimable" if tries < max_attempts else "abandoned"
    if status == "failed":
        return "claimable" if 0 < tries < max_attempts else "failed"
    return "claimable"  # pending


def _advisory_key(text: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock derived from ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class RunQueue:
    """The work queue of sweeps: enqueue configs, claim and renew runs under leases, report where each stands."""

    def _scope(self, config_hashes=None, sweep_id: str | None = None):
        if (config_hashes is None) == (sweep_id is None):
            raise CpPlanError("claim: give exactly one of config_hashes (a sweep's configs) or sweep_id")
        if sweep_id is not None:
            return runs_table.c.sweep_id == str(sweep_id)
        hashes = sorted({str(h) for h in config_hashes})
        if not hashes:
            return sa.false()
        return runs_table.c.config_hash.in_(hashes)


    def enqueue(self, config: dict, config_hash: str, **fields) -> tuple[str, str]:
        """Put one sweep config in the queue; returns ``(run_id, state)``, in one transaction:

        - ``'skipped'``: a 'done' or 'diverged' run of this config exists (run_id is it);
        - ``'held'``: a live worker is training it (a 'running' row whose lease holds);
        - ``'queued'``: run_id is now 'pending': the newest unfinished row of the config (a
          'failed' run, or an abandoned 'running' one, so it resumes from its checkpoint), with
          its attempts reset, or else a new row.
        """
        return self.enqueue_many([(config, config_hash, fields)])[0]


    def enqueue_many(self, items: list[tuple[dict, str, dict]]) -> list[tuple[str, str]]:
        """:meth:`enqueue` for a whole sweep (``(config, config_hash, fields)`` triples) in one
        transaction: the sweep is queued entirely or not at all."""
        self._need_revision("enqueue")
        new_rows = []
        for config, config_hash, fields in items:
            row = self._new_run_row(config, config_hash, dict(fields), "enqueue")
            row.update(status="pending", worker=None, lease_expires_at=None, attempts=0)
            new_rows.append(row)
        c = runs_table.c
        out = []
        with self._tx(write=True) as conn:
            if self.backend == "postgresql":  # serialize enqueues of a config across processes
                for h in sorted({r["config_hash"] for r in new_rows}):
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(h)})
            now = now_iso()
            for new_row in new_rows:
                rows = conn.execute(
                    sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at)
                    .where(c.config_hash == new_row["config_hash"])
                    .order_by(c.seq.desc(), c.run_id.desc())).all()
                out.append(self._enqueue_one(conn, new_row, rows, now))
        return out


    @staticmethod
    def _enqueue_one(conn, new_row: dict, rows, now: str) -> tuple[str, str]:
        states = [queue_state(r.status, 0, is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now),
                              DEFAULT_MAX_ATTEMPTS) for r in rows]  # attempts are reset on a re-queue
        for r, state in zip(rows, states):
            if state in ("done", "diverged"):
                return r.run_id, "skipped"
        for r, state in zip(rows, states):
            if state == "running":
                return r.run_id, "held"
        for r in rows:
            if r.status in ("pending", "failed", "running"):
                # the same science (same hash); settings that do not change it (device, checkpoint
                # folder, ...) come from the command that queues it now, so a corrected flag fixes a retry
                conn.execute(sa.update(runs_table).where(runs_table.c.run_id == r.run_id).values(
                    status="pending", worker=None, lease_expires_at=None, attempts=0,
                    sweep=new_row.get("sweep"), sweep_id=new_row.get("sweep_id"),
                    config_json=new_row.get("config_json"), updated_at=now, rev=runs_table.c.rev + 1))
                return r.run_id, "queued"
        conn.execute(sa.insert(runs_table).values(**new_row))
        return new_row["run_id"], "queued"


    def claim(self, worker: str, lease_s: float = DEFAULT_LEASE_S, *, config_hashes=None,
              sweep_id: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict | None:
        """Claim one run of a sweep for ``worker`` (host:pid), or return None if none is free.

        One write transaction picks, in queue order, a run whose config has no 'done'/'diverged'
        run and no live 'running' row, that is 'pending', or 'failed' after fewer than
        ``max_attempts`` claims (retry), or 'running' but abandoned (lease expired, or its process
        on this host gone); marks it 'running' under ``worker`` until now + ``lease_s``, and
        counts the attempt. An abandoned run that used up its attempts is marked 'failed' instead.
        Returns the run (``get_run``'s dict). Scope: ``config_hashes`` or ``sweep_id``.
        """
        self._need_revision("claim")
        if not isinstance(worker, str) or not worker:
            raise CpPlanError(f"claim: worker must be a non-empty id (host:pid), not {worker!r}")
        if not (isinstance(lease_s, (int, float)) and math.isfinite(lease_s) and lease_s > 0):
            raise CpPlanError(f"claim: lease_s={lease_s!r} must be a positive number of seconds, e.g. 300")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise CpPlanError(f"claim: max_attempts={max_attempts!r} must be an integer >= 1")
        scope = self._scope(config_hashes, sweep_id)
        c = runs_table.c
        for attempt in range(50):
            with self._tx(write=True) as conn:
                now = now_iso()
                finished = set(conn.execute(sa.select(c.config_hash).where(
                    scope, c.status.in_(("done", "diverged")))).scalars())
                rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at,
                                              c.attempts, c.config_hash)
                                    .where(scope, c.status.in_(("pending", "running", "failed")))
                                    .order_by(c.seq, c.run_id)).all()
                stale = {r.run_id for r in rows if is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now)}
                busy = {r.config_hash for r in rows if r.status == "running" and r.run_id not in stale}
                chosen = None
                for r in rows:
                    if r.config_hash in finished or r.config_hash in busy:
                        continue
                    state = queue_state(r.status, r.attempts, r.run_id in stale, max_attempts)
                    if state == "abandoned":
                        conn.execute(sa.update(runs_table).where(
                            c.run_id == r.run_id, c.status == "running", c.worker == r.worker).values(
                            status="failed", lease_expires_at=None, updated_at=now, rev=c.rev + 1,
                            reason=f"abandoned by worker {r.worker} (lease expired or process gone) on "
                                   f"attempt {r.attempts or 0} of {max_attempts}; not retried again"))
                        continue
                    if state == "claimable":
                        chosen = r
                        break
                if chosen is None:
                    return None
                res = conn.execute(sa.update(runs_table).where(
                    c.run_id == chosen.run_id, c.status == chosen.status,
                    c.worker.is_not_distinct_from(chosen.worker),
                    c.lease_expires_at.is_not_distinct_from(chosen.lease_expires_at)).values(
                    status="running", worker=worker, lease_expires_at=iso_in(lease_s),
                    attempts=(chosen.attempts or 0) + 1, updated_at=now, rev=c.rev + 1))
                won = res.rowcount == 1
            if won:
                return self.get_run(chosen.run_id)
            time.sleep(0.01 * (1 + attempt % 5))  # PostgreSQL: another worker took it first; look again
        raise CpPlanError(f"claim: gave up after 50 conflicting attempts in {self.display}; retry")


    def renew(self, run_id: str, worker: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend ``worker``'s lease on a claimed run to now + ``lease_s``; False when the worker
        no longer holds it (then it must stop training it). Not a change to the run's data: the
        fingerprint stays the same."""
        with self._tx(write=True) as conn:
            res = conn.execute(sa.update(runs_table).where(
                runs_table.c.run_id == run_id, runs_table.c.worker == worker, runs_table.c.status == "running")
                .values(lease_expires_at=iso_in(lease_s)))
            return res.rowcount == 1


    def queue_status(self, *, config_hashes=None, sweep_id: str | None = None,
                     max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict[str, dict]:
        """Where each config of a sweep stands, by config hash: ``state`` is 'done', 'diverged',
        'running' (a live worker has it), 'pending' (claimable now or after a lease expires) or
        'failed' (attempts used up), with the run_id, loss and reason of the deciding row."""
        scope = self._scope(config_hashes, sweep_id)
        c = runs_table.c
        with self._tx() as conn:
            now = now_iso()
            rows = conn.execute(sa.select(c.run_id, c.status, c.worker, c.lease_expires_at, c.updated_at,
                                          c.attempts, c.config_hash, c.loss, c.reason)
                                .where(scope).order_by(c.seq.desc(), c.run_id.desc())).all()
        rank = {"done": 0, "diverged": 1, "running": 2, "pending": 3, "failed": 4}
        out: dict[str, dict] = {}
        for r in rows:
            tries = r.attempts or 0
            stale = is_stale(r.status, r.worker, r.lease_expires_at, r.updated_at, now)
            state = queue_state(r.status, tries, stale, max_attempts)
            state = {"claimable": "pending", "abandoned": "failed"}.get(state, state)
            prev = out.get(r.config_hash)
            if prev is None or rank[state] < rank[prev["state"]]:
                out[r.config_hash] = {"state": state, "run_id": r.run_id, "loss": r.loss, "reason": r.reason,
                                      "attempts": tries}
        return out
