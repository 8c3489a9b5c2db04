"""Imports that recognise their input: column names of tracker and paper exports mapped onto
cp-plan's, internal names kept aside, and checkpoint tables (several rows of one run) folded.

Run before :func:`planner.importing.prepare_import` by `cp-plan runs import`; every decision is
returned as a note for the import to print, so nothing happens silently.

- :func:`auto_map`: a canonical column the table lacks is taken from the first column whose name
  (case, spaces and dashes ignored) is one of its :data:`ALIASES`, e.g. ``final_loss`` → ``loss``,
  ``width`` → ``n_embd``. A column named like one of the database's own bookkeeping columns
  (``step``, ``worker``, ...) is kept as the extra ``orig_<name>``.
- :func:`fold_checkpoints`: when one run name has several rows with growing tokens, ``final``
  keeps each run's last row as the run and the others as its loss curve; ``all`` keeps every row
  as its own observation (run ids ``<name>@<tokens>``).
"""

from __future__ import annotations

import math
import re

from planner.errors import CpPlanError

# canonical column -> names it is recognised by, most specific first (normalised: lower case, _)
ALIASES: dict[str, tuple[str, ...]] = {
    "loss": ("final_loss", "val_loss", "validation_loss", "eval_loss", "valid_loss", "final_val_loss",
             "loss_final", "test_loss", "final_eval_loss"),
    "n_tokens": ("tokens", "num_tokens", "n_tokens_seen", "tokens_seen", "train_tokens", "training_tokens",
                 "total_tokens", "dataset_size"),
    "n_embd": ("width", "d_model", "hidden_size", "model_dim", "dim", "hidden_dim", "embed_dim", "n_embed"),
    "n_layer": ("depth", "n_layers", "num_layers", "num_hidden_layers", "layers", "nlayers"),
    "n_params": ("non_embedding_params", "params_non_embedding", "nonembedding_params", "non_embedding_parameters",
                 "params_active_precise", "params_active", "active_params", "num_params", "params", "parameters",
                 "model_size", "n_parameters"),
    "flops": ("training_flops", "train_flops", "total_flops", "training_flop", "compute", "c"),
    "lr": ("learning_rate", "peak_lr", "max_lr", "lr_peak"),
    "n_head": ("n_heads", "num_heads", "num_attention_heads", "heads"),
    "seq_len": ("seq_length", "context_length", "block_size", "max_seq_len", "sequence_length", "ctx_len"),
    "vocab_size": ("vocab", "n_vocab", "vocabulary_size"),
}
RUN_NAME_ALIASES = ("run_name", "name", "run", "experiment", "run_id")
STEP_ALIASES = ("step", "steps", "iteration", "iter", "global_step", "orig_step")
CHECKPOINT_MODES = ("final", "all")
_ID_BAD = re.compile(r"[^A-Za-z0-9._@-]+")


def normalise(name: str) -> str:
    return re.sub(r"[\s\-/]+", "_", str(name).strip().lower())


def auto_map(df, explicit: set[str] | frozenset[str] = frozenset()):
    """(table with recognised columns renamed, [(from, to), ...], notes). ``explicit``: the
    targets of the user's --rename (never overridden, never kept aside)."""
    from planner.tableio import CANONICAL_COLUMNS, INTERNAL_COLUMNS, RUN_COLUMN_KINDS

    cols = [str(c) for c in df.columns]
    known = set(RUN_COLUMN_KINDS) | set(CANONICAL_COLUMNS)
    mapping: dict[str, str] = {}
    notes: list[str] = []
    is_export = {"config_hash", "created_at"} <= set(cols)
    for internal in INTERNAL_COLUMNS:
        if internal in cols and internal not in explicit and not is_export and f"orig_{internal}" not in cols:
            mapping[internal] = f"orig_{internal}"
            notes.append(f"column {internal!r} is a name the run database keeps for itself: kept as the extra "
                         f"orig_{internal}")
    taken = set(cols) - set(mapping)
    by_norm: dict[str, str] = {}
    for c in cols:
        by_norm.setdefault(normalise(c), c)
    for target in dict.fromkeys([*ALIASES, *CANONICAL_COLUMNS]):
        names = (target, *ALIASES.get(target, ()))  # the canonical name itself in other case ('Loss')
        if target in taken or target in explicit:
            continue
        for alias in names:
            src = by_norm.get(alias)
            if src is not None and src not in mapping and src not in known:
                mapping[src] = target
                taken.add(target)
                others = [by_norm[a] for a in names if a in by_norm and by_norm[a] not in mapping]
                if others:
                    notes.append(f"{src!r} taken as {target}; {', '.join(map(repr, others))} kept as extra "
                                 f"column(s) (--rename one of them={target} to choose it)")
                break
    pairs = [(a, b) for a, b in mapping.items() if not b.startswith("orig_")]
    return df.rename(columns=mapping), pairs, notes


def _finite(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):  # validation reports the cell; folding just skips it
        return math.nan
    return v


def fold_checkpoints(df, mode: str = "final"):
    """(table, curves, notes): ``curves`` maps a kept run_id to its earlier checkpoints (dicts
    with step, n_tokens, val_loss) for ``final``; empty for ``all`` or a table of one row per run."""
    if mode not in CHECKPOINT_MODES:
        raise CpPlanError(f"--checkpoints {mode!r} is not one of {', '.join(CHECKPOINT_MODES)}; "
                          "final keeps each run's last row (the rest as its curve), all keeps every row")
    cols = {normalise(c): c for c in df.columns}
    name_col = next((cols[a] for a in RUN_NAME_ALIASES if a in cols), None)
    if name_col is None or "n_tokens" not in df.columns or len(df) == 0:
        return df, {}, []
    names = df[name_col].astype(str)
    counts = names.value_counts()
    if counts.max() <= 1:
        return df, {}, []
    tokens = df["n_tokens"].map(_finite)
    step_col = next((cols[a] for a in STEP_ALIASES if a in cols), None)
    order = df.assign(_name=names, _tok=tokens).sort_values(["_name", "_tok"], kind="stable")
    repeated = int((counts > 1).sum())
    if mode == "all":
        ids = [f"{_ID_BAD.sub('_', n)}@{t:.6g}" for n, t in zip(names, tokens)]
        out = df.copy()
        out["run_id"] = ids
        note = (f"checkpoint table: {repeated} run(s) ({name_col!r}) have several rows; --checkpoints all "
                f"imports each of the {len(df)} rows as its own observation (run ids <name>@<tokens>)")
        return out, {}, [note]
    keep_idx, curves = [], {}
    for name, grp in order.groupby("_name", sort=False):
        last = grp.index[-1]
        keep_idx.append(last)
        rid = _ID_BAD.sub("_", name)[:200]
        points = []
        for i, (idx, row) in enumerate(grp.iterrows()):
            step = _finite(row[step_col]) if step_col is not None else float(i)
            points.append({"step": int(step) if math.isfinite(step) else i, "n_tokens": _finite(row["_tok"]),
                           "val_loss": _finite(row["loss"]) if "loss" in grp.columns else None})
        curves[rid] = points
    out = df.loc[sorted(keep_idx)].copy()
    out["run_id"] = [_ID_BAD.sub("_", n)[:200] for n in out[name_col].astype(str)]
    note = (f"checkpoint table: {repeated} run(s) ({name_col!r}) have several rows; --checkpoints final (default) "
            f"keeps each run's last row ({len(out)} runs) and stores the {len(df) - len(out)} earlier ones as "
            "their loss curves (--checkpoints all: every row as its own observation)")
    return out.reset_index(drop=True), curves, [note]
