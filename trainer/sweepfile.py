"""Sweep files: a list of training configs as JSON, written by `cp-plan next` and run by
`cp-plan sweep file FILE` through the same queue as the other sweeps (no torch here).

Format (``cp-plan-sweep/1``)::

    {"format": "cp-plan-sweep/1", "sweep": "shape", "sweep_id": "next-P1.5e+09",
     "runs": [{"label": "completep N=64 L=22 ...", "config": {<every TrainConfig field>}}, ...]}

A bare JSON list of configs (or of ``{"label", "config"}`` entries) is read too. Every config goes
through :meth:`trainer.config.TrainConfig.from_dict`, so unknown keys and bad values are refused
with the run's position in the file. ``sweep`` is the kind recorded with each run: ``shape`` runs
feed the shape laws, ``lr`` and ``coord`` runs are kept out of them (planner.lawcache).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from planner.errors import CpPlanError
from planner.plainjson import stored_config
from trainer.config import TOKENIZER_VOCAB, TrainConfig
from trainer.sweep import PlannedRun

SWEEP_FILE_FORMAT = "cp-plan-sweep/1"
SWEEP_KINDS = ("shape", "lr", "coord")
# Fields a proposal sets per run; every other field comes from the runs behind the laws.
PER_RUN_FIELDS = ("parameterization", "alpha", "n_embd", "n_layer", "n_tokens", "seed")


def read_sweep_file(path: str | Path) -> tuple[str, str, list[PlannedRun]]:
    """(sweep kind, sweep id, planned runs) from a sweep file, every config validated."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CpPlanError(f"sweep file {path} does not exist; write one with `cp-plan next ... --out {path}`") from None
    except RecursionError:
        raise CpPlanError(f"sweep file {path} is nested too deeply to be a sweep file; regenerate it "
                          "(cp-plan next --out)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CpPlanError(f"sweep file {path} cannot be read as JSON ({exc}); regenerate it") from None
    kind, sweep_id = "shape", f"file-{path.stem}"
    if isinstance(data, dict):
        if data.get("format") not in (None, SWEEP_FILE_FORMAT):
            raise CpPlanError(f"sweep file {path}: format {data.get('format')!r} is not {SWEEP_FILE_FORMAT!r}")
        kind = data.get("sweep", kind)
        sweep_id = data.get("sweep_id") or sweep_id
        entries = data.get("runs")
    else:
        entries = data
    if kind not in SWEEP_KINDS:
        raise CpPlanError(f"sweep file {path}: sweep {kind!r} is not one of {', '.join(SWEEP_KINDS)}")
    if not isinstance(sweep_id, str) or not sweep_id.strip():
        raise CpPlanError(f"sweep file {path}: sweep_id {sweep_id!r} must be a non-empty string")
    if not isinstance(entries, list) or not entries:
        raise CpPlanError(f"sweep file {path} holds no runs: give a JSON list of training configs, or an "
                          "object whose \"runs\" is one")
    planned = []
    for i, entry in enumerate(entries, 1):
        label = None
        if isinstance(entry, dict) and "config" in entry:
            label, entry = entry.get("label"), entry["config"]
        try:
            cfg = TrainConfig.from_dict(entry)
        except CpPlanError as exc:
            raise CpPlanError(f"sweep file {path}, run {i}: {exc}") from None
        except TypeError as exc:  # a non-mapping entry that from_dict could not unpack
            raise CpPlanError(f"sweep file {path}, run {i}: not a training config ({exc})") from None
        _check_paths(cfg, f"sweep file {path}, run {i}")
        planned.append(PlannedRun(cfg, str(label) if label else default_label(cfg)))
    return kind, sweep_id, planned


def _check_paths(cfg: TrainConfig, where: str) -> None:
    """The paths a sweep file may name. Its ``checkpoint_dir`` is written to, so it must stay
    below the current folder (relative, no '..'): a file from elsewhere cannot make a sweep write
    into /etc. Its ``corpus`` is only read, and users keep corpora anywhere, so any path is
    allowed, but it must be a regular file: a FIFO or a device (/dev/zero) would block or never
    end."""
    if cfg.checkpoint_dir is not None:
        ckpt = Path(cfg.checkpoint_dir)
        if ckpt.is_absolute() or ".." in ckpt.parts:
            raise CpPlanError(f"{where}: checkpoint_dir {cfg.checkpoint_dir!r} leaves the current folder; a sweep "
                              "file may only name a folder below it (e.g. data/checkpoints) or null")
    if cfg.corpus not in ("kjv", "english"):
        corpus = Path(cfg.corpus).expanduser()
        if not corpus.is_file():
            what = "does not exist" if not corpus.exists() else "is not a regular file"
            raise CpPlanError(f"{where}: corpus {cfg.corpus!r} {what}; give 'kjv', 'english' or a text file")


def default_label(cfg: TrainConfig) -> str:
    return (f"{cfg.parameterization} P={cfg.n_params:,} N={cfg.n_embd} L={cfg.n_layer} "
            f"(N:L={cfg.n_embd / cfg.n_layer:.3g}) tokens={cfg.n_tokens:,} seed={cfg.seed}")


def training_settings(frame, context: dict | None) -> tuple[dict, list[str]]:
    """The training settings of the runs behind the laws: every TrainConfig field except the
    per-run ones, from the runs' most common stored config, with the base shape and base HPs of
    the law's context (what the laws' transfer assumes). Returns (settings, notes)."""
    notes = []
    configs = []
    if frame is not None and "config_json" in getattr(frame, "columns", []):
        for raw in frame["config_json"].tolist():
            if stored_config(raw) is not None:
                try:
                    cfg = TrainConfig.from_dict(stored_config(raw)).to_dict()
                except (CpPlanError, ValueError, TypeError):
                    continue
                configs.append(json.dumps({k: v for k, v in cfg.items() if k not in PER_RUN_FIELDS}, sort_keys=True))
    ctx = context or {}
    if configs:
        settings = json.loads(Counter(configs).most_common(1)[0][0])
    else:
        settings = {k: v for k, v in TrainConfig().to_dict().items() if k not in PER_RUN_FIELDS}
        d_heads, seq_lens = ctx.get("d_heads") or [], ctx.get("seq_lens") or []
        if d_heads:
            settings["d_head"] = int(d_heads[0])
        if seq_lens:
            settings["seq_len"] = int(seq_lens[0])
        notes.append("the runs behind the laws store no training config (imported?): the proposed runs use "
                     "this trainer's defaults with the runs' head size and context")
    vocabs = [v for v in ctx.get("vocab_sizes") or [] if isinstance(v, (int, float))]
    if vocabs and all(int(v) not in TOKENIZER_VOCAB.values() for v in vocabs):
        notes.append(f"the runs behind the laws used vocabulary {int(vocabs[0])}, which this trainer cannot "
                     f"reproduce (it has {', '.join(f'{k} ({v})' for k, v in TOKENIZER_VOCAB.items())}): "
                     "train the proposed shapes with your own trainer and import them")
    base = ctx.get("base") or {}
    for key in ("base_n_embd", "base_n_layer", "lr", "init_std", "weight_decay", "eps", "input_mult", "output_mult"):
        v = base.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            settings[key] = int(v) if key in ("base_n_embd", "base_n_layer") else float(v)
    settings.pop("checkpoint_dir", None)
    settings["device"] = "auto"
    return settings, notes


def proposal_configs(runs: list[dict], settings: dict, taken_hashes=()) -> list[tuple[TrainConfig, str]]:
    """TrainConfigs for a proposal's runs (``planner.nextruns.Proposal.runs``): the settings, the
    run's parameterization, shape and tokens, and seed = the settings' seed + the run's replicate
    index, moved on past any seed whose config the database already holds (``taken_hashes``), so
    every proposed run is one the sweep will train. Sets each run's ``seed`` and ``config_hash``."""
    taken = set(taken_hashes)
    out = []
    for r in runs:
        seed = int(settings.get("seed", 0)) + int(r.get("replicate", 0))
        while True:
            cfg = TrainConfig.from_dict({**settings, "parameterization": r["parameterization"], "alpha": r.get("alpha"),
                                         "n_embd": int(r["n_embd"]), "n_layer": int(r["n_layer"]),
                                         "d_head": int(r["d_head"]), "n_tokens": int(r["n_tokens"]), "seed": seed})
            h = cfg.config_hash()
            if h not in taken:
                break
            seed += 1
        taken.add(h)
        r["seed"], r["config_hash"] = seed, h
        label = (f"{cfg.parameterization} P={cfg.n_params:,} N={cfg.n_embd} L={cfg.n_layer} "
                 f"(N:L={cfg.n_embd / cfg.n_layer:.3g}) seed={seed}, next step {r.get('step', '?')}")
        out.append((cfg, label))
    return out


def sweep_file_text(configs: list[tuple[TrainConfig, str]], sweep_id: str, sweep: str = "shape",
                    note: dict | None = None) -> str:
    """The sweep file for ``configs`` ((config, label) pairs) as JSON text."""
    if sweep not in SWEEP_KINDS:
        raise CpPlanError(f"sweep {sweep!r} is not one of {', '.join(SWEEP_KINDS)}")
    data = {"format": SWEEP_FILE_FORMAT, "sweep": sweep, "sweep_id": sweep_id,
            "runs": [{"label": label, "config": cfg.to_dict()} for cfg, label in configs]}
    if note:
        data["proposal"] = note
    return json.dumps(data, indent=2) + "\n"


def plan_next(lawset, run_db, target, hardware, budget_flops: float, *, max_runs: int, p_mults,
              sweep_id: str | None = None) -> tuple[dict, str]:
    """`cp-plan next`: the proposal (planner.nextruns) for ``target`` from ``lawset`` (fitted from
    ``run_db``), each run made a TrainConfig with the database's own training settings. Returns
    (the proposal as plain JSON with each run's seed, config hash and config; the sweep file text)."""
    from planner.lawcache import shape_frame
    from planner.nextruns import propose
    from planner.recommend import law_key_for

    key = target.parameterization if target.parameterization in lawset.laws else law_key_for(target.parameterization)
    ctx = lawset.context.get(key) or {}
    done = run_db.runs(statuses=("done", "diverged"))
    frame, _ = shape_frame(done)
    settings, notes = training_settings(frame, ctx)
    tok_vocab = TOKENIZER_VOCAB.get(settings.get("tokenizer"), 256)
    proposal = propose(lawset.laws, lawset.context, lawset.meta, target, hardware, budget_flops,
                       d_head=int(settings["d_head"]), vocab_size=int(tok_vocab), seq_len=int(settings["seq_len"]),
                       max_runs=max_runs, p_mults=p_mults).to_dict()
    taken = set(done["config_hash"].dropna().tolist()) if "config_hash" in done.columns else set()
    configs = proposal_configs(proposal["runs"], settings, taken)
    for r, (cfg, label) in zip(proposal["runs"], configs):
        r["label"] = label
    proposal["warnings"] = list(proposal["warnings"]) + notes
    proposal["training_settings"] = settings
    sweep_id = sweep_id or f"next-P{float(target.n_params or 0):.3g}-{proposal['target']['hardware']}"
    proposal["sweep_id"] = sweep_id
    note = {k: proposal[k] for k in ("target", "budget_flops", "flops_used", "quantities", "method")}
    return proposal, sweep_file_text(configs, sweep_id, "shape", note)
