"""Shape laws for the planner, fitted from a run database and cached next to it.

``load_laws(db=..., laws_path=...)`` returns a :class:`LawSet`: one ``shape`` law
(``planner.fitter.fit_law("shape", ...)``) per parameterization, plus the facts about the runs
behind each law that a plan must state (largest P, trained N:L range, tokens per parameter, base
shape and hyperparameters, data and devices).

Cache. The laws fitted from a SQLite database live in a JSON file beside it — ``laws.json`` for
the default ``data/runs/runs.sqlite``, ``<stem>.laws.json`` for any other — keyed by
``RunDB.fingerprint()`` and the law settings (law form, bootstrap refits, seed, cache version).
When the fingerprint differs the laws are refitted and the file rewritten. Opening the database
costs more than a second (SQLAlchemy and pandas), so the cache also records the SHA-256 of the
database file taken while its WAL was empty: when the file still hashes the same and no WAL is
pending, the database is byte-identical to the one the laws were fitted from, and the cached
laws are used without opening it (the fast path behind ``cp-plan recommend`` in well under a
second). Any other case takes the slow path, which compares fingerprints. Runs of ``lr`` and
``coord`` sweeps are left out of shape laws (their LRs are off-optimum by design), as are runs
without a width and depth.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from planner.errors import CpPlanError
from planner.plainjson import plain, stored_config

CACHE_FORMAT = "cp-plan-laws"
CACHE_VERSION = 6  # 3: reference form mixture + parameterization gaps (planner.planlaws); 5: extrapolation terms;
#   6: refits whose loss rises with scale beyond the runs are rejected
DEFAULT_BOOTSTRAP = 200
DEFAULT_SEED = 0
EXCLUDED_SWEEPS = ("lr", "coord")
# Same rule as planner.db.default_db_url, repeated here so the cached path need not import
# planner.db (which loads SQLAlchemy and pandas).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_PATH = PROJECT_ROOT / "data" / "runs" / "runs.sqlite"


@dataclass(frozen=True)
class LawSet:
    """Per-parameterization shape laws and the context of the runs behind them."""

    laws: dict  # parameterization -> law (planner.fitter.FitResult)
    context: dict  # parameterization -> facts about its runs (plain JSON)
    meta: dict  # origin, fingerprint, settings, skipped parameterizations
    notes: list = field(default_factory=list)  # things the CLI may tell the user (cache not written, ...)


def default_db() -> str:
    """``$CP_PLAN_DB`` if set, else the project's ``data/runs/runs.sqlite`` (as planner.db)."""
    return os.environ.get("CP_PLAN_DB", "").strip() or str(DEFAULT_DB_PATH)


def sqlite_path(db: str) -> Path | None:
    """The file behind a SQLite path or ``sqlite:///`` URL; None for other databases."""
    if "://" not in db:
        return Path(db).expanduser().absolute()
    if db.startswith("sqlite:///") and len(db) > len("sqlite:///"):
        rest = db[len("sqlite:///"):].split("?", 1)[0]
        return Path(rest).expanduser().absolute() if rest not in ("", ":memory:") else None
    return None


def cache_path_for(db: str, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> Path | None:
    """Where the laws of database ``db`` fitted with these settings are cached (None: not a file
    database). Other settings get their own file (``laws.b0-s0.json``), so a report fitted with
    ``--bootstrap 0`` never replaces the default cache that ``recommend`` reads."""
    path = sqlite_path(db)
    if path is None:
        return None
    suffix = "" if (bootstrap, seed) == (DEFAULT_BOOTSTRAP, DEFAULT_SEED) else f".b{int(bootstrap)}-s{int(seed)}"
    if path == DEFAULT_DB_PATH.absolute() or path.name == "runs.sqlite":
        return path.with_name(f"laws{suffix}.json")
    return path.with_name(f"{path.stem}.laws{suffix}.json")


def display_path(path: str | Path | None) -> str | None:
    """A path as stored in caches and reports: relative to the project when inside it, so the
    shipped files carry no machine's absolute paths."""
    if path is None:
        return None
    p = Path(str(path))
    try:
        return str(p.resolve().relative_to(PROJECT_ROOT.resolve()))
    except (ValueError, OSError):
        return str(path)


def _settings(bootstrap: int, seed: int) -> dict:
    return {"law": "shape", "bootstrap": int(bootstrap), "seed": int(seed), "version": CACHE_VERSION}


def _file_sha256(path: Path) -> str | None:
    """SHA-256 of a SQLite file, or None when a non-empty WAL means the file alone is not the
    database (or the file is missing)."""
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.exists() and wal.stat().st_size > 0:
            return None
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if wal.exists() and wal.stat().st_size > 0:
            return None
        return h.hexdigest()
    except OSError:
        return None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CpPlanError(f"{what} {path} does not exist; give an existing laws file "
                          "(e.g. from `cp-plan fit --out`) or leave out --laws") from None
    except RecursionError:
        raise CpPlanError(f"{what} {path} is nested too deeply to be a laws file; regenerate it "
                          "(cp-plan fit --out)") from None
    except (OSError, ValueError) as exc:
        raise CpPlanError(f"{what} {path} cannot be read as JSON ({exc}); regenerate it") from None
    if not isinstance(data, dict):
        raise CpPlanError(f"{what} {path} holds a {type(data).__name__}, not a JSON object of laws")
    return data


def _laws_from_json(entries: dict, origin: str) -> dict:
    from planner.fitter import FitResult

    laws = {}
    for name, entry in entries.items():
        try:
            laws[name] = FitResult.from_json(entry)
        except CpPlanError:
            raise
        except Exception as exc:  # a hand-edited or foreign file: say which entry
            raise CpPlanError(f"laws file {origin}: entry {name!r} is not a fitted law ({exc}); "
                              "regenerate the file") from None
    return laws


def _from_cache_dict(data: dict, origin: str, how: str) -> LawSet:
    if isinstance(data.get("plan_laws"), dict):
        from planner.planlaws import build_laws

        try:
            laws = build_laws(data["plan_laws"])
        except CpPlanError:
            raise
        except Exception as exc:  # a hand-edited or damaged cache
            raise CpPlanError(f"laws file {origin} is damaged ({type(exc).__name__}: {exc}); delete it or "
                              "pass --refit") from None
    else:
        laws = _laws_from_json(data.get("laws") or {}, origin)
    meta = {
        "origin": how, "file": origin, "fingerprint": data.get("fingerprint"), "db": data.get("db"),
        "settings": data.get("settings"), "skipped": data.get("skipped") or {},
        "n_runs_dropped": data.get("n_runs_dropped") or {},
        "noise": (data.get("plan_laws") or {}).get("noise"),
        "reference": (data.get("plan_laws") or {}).get("reference"),
    }
    return LawSet(laws=laws, context=data.get("context") or {}, meta=meta)


def _write_cache(path: Path, data: dict) -> str | None:
    """Atomic write; returns a note instead of failing when the directory is read-only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".laws-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(plain(data), fh, indent=1, allow_nan=False)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is as shareable as the database
        os.replace(tmp, path)
        return None
    except (OSError, ValueError) as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return f"could not write the laws cache {path} ({exc}); laws are refitted on every run"





def load_laws(db: str | None = None, laws_path: str | None = None, *,
              bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED, refit: bool = False,
              on_fit: Callable[[str], None] | None = None) -> LawSet:
    """Shape laws from ``laws_path`` if given, else from database ``db`` (default: the project's)
    through its cache. ``refit`` ignores a valid cache; ``on_fit`` is told before a (slow) fit."""
    if laws_path is not None:
        return _load_laws_file(Path(laws_path))
    db = str(db) if db is not None else default_db()
    settings = _settings(bootstrap, seed)
    file_path = sqlite_path(db)
    cache = cache_path_for(db, bootstrap, seed)
    if file_path is not None and not file_path.is_file():
        raise CpPlanError(
            f"no run database at {file_path}; train runs (`cp-plan sweep shape ...`), import "
            "published ones (`cp-plan runs import ...`), or point --db / $CP_PLAN_DB at one"
        )
    cached = None
    if cache is not None and cache.is_file() and not refit:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = None  # a broken cache is refitted, not an error
        if not (isinstance(cached, dict) and cached.get("format") == CACHE_FORMAT
                and cached.get("settings") == settings):
            cached = None
    # Fast path: the database file is byte-identical to the one the cache was fitted from.
    if cached is not None and cached.get("db_sha256") and file_path is not None:
        if _file_sha256(file_path) == cached["db_sha256"]:
            return _from_cache_dict(cached, display_path(cache), "cache")

    from planner.db import RunDB

    sha_before = _file_sha256(file_path) if file_path is not None else None
    run_db = RunDB(db, create=False)
    try:
        fingerprint = run_db.fingerprint()
        if cached is not None and cached.get("fingerprint") == fingerprint:
            data, fitted = dict(cached), False  # a copy: the sha comparison below needs the old one
        else:
            if on_fit is not None:
                on_fit(f"fitting shape laws from {run_db.display} (bootstrap {bootstrap}, seed {seed}) ...")
            data, fitted = _fit_from_db(run_db, settings, on_fit), True
            data["fingerprint"] = fingerprint
        display = run_db.display
    finally:
        run_db.close()
    sha_after = _file_sha256(file_path) if file_path is not None else None
    data["db"] = display_path(display) if file_path is not None else display
    data["db_sha256"] = sha_after if sha_after is not None and sha_after == sha_before else None
    notes = []
    if cache is not None and (fitted or data["db_sha256"] != (cached or {}).get("db_sha256")):
        note = _write_cache(cache, data)
        if note:
            notes.append(note)
    out = _from_cache_dict(data, display_path(cache) if cache else display, "fitted" if fitted else "cache")
    return LawSet(laws=out.laws, context=out.context, meta=out.meta, notes=notes)


def _load_laws_file(path: Path) -> LawSet:
    """A laws file: this module's cache format, or ``cp-plan fit --law shape`` output (a
    FitResult per parameterization under ``laws``, or one FitResult whose meta names it)."""
    data = _read_json(path, "laws file")
    if data.get("format") == CACHE_FORMAT:
        out = _from_cache_dict(data, str(path), "file")
    else:
        out = _from_fit_output(data, path)
    if not out.laws:
        raise CpPlanError(f"laws file {path} holds no shape law; write one with `cp-plan fit --law shape "
                          "--out FILE` or leave out --laws to fit from the run database")
    return out


def _from_fit_output(data: dict, path: Path) -> LawSet:
    entries = data.get("laws") if isinstance(data.get("laws"), dict) else None
    if entries is None:
        meta = data.get("meta") or {}
        name = meta.get("group") or meta.get("parameterization") or "completep"
        entries = {name: data}
    shape = {k: v for k, v in entries.items()
             if isinstance(v, dict) and (v.get("law") in (None, "shape")
                                         and (v.get("meta") or {}).get("law", "shape") == "shape")}
    laws = _laws_from_json(shape, str(path))
    meta = {"origin": "file", "file": str(path), "fingerprint": data.get("fingerprint"),
            "settings": None, "skipped": {}, "n_runs_dropped": {}}
    return LawSet(laws=laws, context=data.get("context") or {}, meta=meta)


# ---------------------------------------------------------------------- fitting


def law_key(parameterization: str, alpha) -> str:
    """Laws are per parameterization; a depth-α other than the presets is keyed with its α."""
    if parameterization == "depth-alpha" and alpha is not None and not _isnan(alpha):
        return f"depth-alpha:{float(alpha):g}"
    return str(parameterization)


def _isnan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def shape_frame(df):
    """The runs a shape law may use (a pandas DataFrame of done runs) and counts of those left
    out, by reason."""
    import numpy as np

    dropped: dict[str, int] = {}

    def drop(mask, reason):
        nonlocal df
        n = int(mask.sum())
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
            df = df[~mask]

    if "sweep" in df.columns:
        drop(df["sweep"].isin(EXCLUDED_SWEEPS), "lr/coord sweep runs")
    for col in ("n_embd", "n_layer", "n_params", "n_tokens", "loss"):
        if col not in df.columns:
            df = df.assign(**{col: np.nan})
    drop(df[["n_embd", "n_layer"]].isna().any(axis=1), "no width/depth (imported?)")
    bad = ~(np.isfinite(df["loss"].astype(float)) & (df["n_params"].astype(float) > 0)
            & (df["n_tokens"].astype(float) > 0))
    drop(bad, "missing loss, n_params or n_tokens")
    df = df.copy()
    df["ratio"] = df["n_embd"].astype(float) / df["n_layer"].astype(float)
    return df.reset_index(drop=True), dropped


def _fit_from_db(run_db, settings: dict, progress: Callable[[str], None] | None = None) -> dict:

    all_done = run_db.runs()
    if len(all_done) == 0:
        raise CpPlanError(
            f"the run database {run_db.display} has no finished runs; train a shape sweep "
            "(`cp-plan sweep shape --params P --ratios 8,16,32 --parameterizations sp,mup,completep`) "
            "or import published runs (`cp-plan runs import FILE`)"
        )
    if len(all_done) == 1:
        raise CpPlanError(
            f"the run database {run_db.display} has only 1 finished run; a shape law needs several "
            "shapes at two or more sizes per parameterization: run `cp-plan sweep shape` at two --params"
        )
    df, dropped = shape_frame(all_done)
    if len(df) == 0:
        raise CpPlanError(
            f"none of the {len(all_done)} finished runs in {run_db.display} can feed a shape law "
            f"({', '.join(f'{n} {why}' for why, n in dropped.items())}); run `cp-plan sweep shape`"
        )
    import numpy as np

    from planner.planlaws import fit_plan_laws

    keys = np.array([law_key(p, a) for p, a in zip(df["parameterization"], df.get("alpha", [None] * len(df)))],
                    dtype=object)
    context = {k: run_context(df[keys == k].reset_index(drop=True)) for k in sorted(set(keys.tolist()))}
    plan_laws = fit_plan_laws(df, keys, bootstrap=settings["bootstrap"], seed=settings["seed"], contexts=context,
                              progress=progress)
    fitted = {plan_laws["reference"], *plan_laws["gaps"]}
    return {
        "format": CACHE_FORMAT, "settings": settings, "plan_laws": plan_laws,
        "context": {k: v for k, v in context.items() if k in fitted},
        "skipped": dict(plan_laws.get("skipped") or {}), "n_runs_dropped": dropped,
    }


def run_context(sub) -> dict:
    """Facts about the runs behind one law, as plain JSON (see module docstring)."""
    import numpy as np

    def uniq(col):
        if col not in sub.columns:
            return []
        vals = [v for v in sub[col].tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        return sorted({(int(v) if isinstance(v, float) and v.is_integer() else v) for v in vals}, key=str)

    n_params = sub["n_params"].astype(float)
    tpp = sub["n_tokens"].astype(float) / n_params
    out = {
        "n_runs": int(len(sub)),
        "max_n_params": float(n_params.max()),
        "max_n_tokens": float(sub["n_tokens"].astype(float).max()),
        "min_n_params": float(n_params.min()),
        "n_sizes": int(np.unique(np.round(np.log(n_params), 1)).size),
        "ratio_min": float(sub["ratio"].min()),
        "ratio_max": float(sub["ratio"].max()),
        "tokens_per_param": [float(tpp.min()), float(tpp.max())],
        "sources": uniq("source"),
        "devices": uniq("device"),
        "vocab_sizes": uniq("vocab_size"),
        "seq_lens": uniq("seq_len"),
        "d_heads": uniq("d_head"),
        "flop_conventions": uniq("flop_convention"),
        "max_epochs": float(sub["epochs"].max()) if "epochs" in sub.columns and sub["epochs"].notna().any() else None,
    }
    out["corpora"], out["tokenizers"] = _config_values(sub, "corpus"), _config_values(sub, "tokenizer")
    out["base"] = base_hparams(sub)
    return out


def _config_values(sub, name: str) -> list:
    """Distinct values of one config field over the runs (from ``config_json``)."""
    if "config_json" not in sub.columns:
        return []
    vals = set()
    for raw in sub["config_json"].tolist():
        v = (stored_config(raw) or {}).get(name)
        if v is not None:
            vals.add(str(v))
    return sorted(vals)


def base_hparams(sub) -> dict | None:
    """The base shape and base hyperparameters the runs were trained with (their most common
    setting), for transferring to the recommended shape; None when the runs record no base
    shape, and ``lr`` None when none of them records a base LR."""
    rows = []
    for _, r in sub.iterrows():
        cfg: dict[str, Any] = stored_config(r.get("config_json") if "config_json" in sub.columns else None) or {}

        def pick(name):
            v = r.get(name) if name in sub.columns else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = cfg.get(name)
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        base = {k: pick(k) for k in ("base_n_embd", "base_n_layer", "lr", "init_std")}
        for k in ("weight_decay", "eps", "input_mult", "output_mult", "d_head"):
            base[k] = cfg.get(k)
        base["alpha"] = pick("alpha")
        if base["base_n_embd"] is None or base["base_n_layer"] is None:
            continue
        base["base_n_embd"], base["base_n_layer"] = int(base["base_n_embd"]), int(base["base_n_layer"])
        rows.append(tuple(sorted(base.items(), key=lambda kv: kv[0])))
    # Runs with a base LR decide; a base shape alone (imported runs without lr) still serves the
    # gap laws' multipliers, and the plan says the hyperparameters need the LR.
    with_lr = [r for r in rows if dict(r)["lr"] is not None]
    rows = with_lr or rows
    if not rows:
        return None
    counts = Counter(rows)
    best, n = counts.most_common(1)[0]
    out = dict(best)
    out["note"] = (f"all {n} runs" if len(counts) == 1 else
                   f"the most common of {len(counts)} base settings, used by {n} of {len(rows)} runs")
    return out
