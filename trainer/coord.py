"""Coordinate check: activation size across depth or width over the first training steps.

Reproduces the check of Dey et al. 2025, Fig. 7 (and Yang et al. 2021's width check): train each
shape for a few steps at a constant LR and record, per (parameterization, n_layer, n_embd, step),
the mean |h| of the last block's output (``resid_abs_mean``) and of the logits. Under a correct
parameterization these stay O(1) as the shape grows; under μP they grow with depth.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from planner.errors import CpPlanError
from trainer.data import Batches, load_corpus
from trainer.model import GPT
from trainer.optim import build_optimizer

# ratio = value at the largest shape / value at the smallest; inside these bounds is "stable".
STABLE_BOUNDS = (0.5, 2.0)


def coord_check(base_config, parameterizations: list[tuple[str, float | None]], n_embds: list[int],
                n_layers: list[int], steps: int, axis: str, log=None) -> list[dict]:
    """Train every (parameterization, width, depth) for ``steps`` steps at the constant LR
    ``base_config.lr`` (no warmup or decay) and return one row per (shape, step).

    The same seed and the same batches are used for every shape. ``step`` 0 is the forward pass
    before any update; step k is the forward after k updates (on the k-th batch).
    """
    if steps < 1:
        raise CpPlanError(f"--steps {steps} must be ≥ 1")
    if axis not in ("depth", "width"):
        raise CpPlanError(f"axis={axis!r} must be depth or width")
    corpus = load_corpus(base_config.corpus, base_config.tokenizer)
    rows: list[dict] = []
    check_id = f"coord-{axis}-{int(time.time())}"
    for name, alpha in parameterizations:
        for n_embd in n_embds:
            for n_layer in n_layers:
                cfg = replace(base_config, parameterization=name, alpha=alpha, n_embd=n_embd, n_layer=n_layer)
                cfg.__post_init__()  # dataclasses.replace validates, but make the intent explicit
                if log:
                    log(f"coord-check {name} N={n_embd} L={n_layer}")
                for step, resid, logits in _trace(cfg, corpus, steps):
                    rows.append(dict(check_id=check_id, parameterization=name, alpha=alpha,
                                     n_embd=n_embd, n_layer=n_layer, step=step,
                                     resid_abs_mean=resid, logits_abs_mean=logits, axis=axis))
    return rows


def _trace(cfg, corpus, steps: int):
    torch.manual_seed(cfg.seed)
    model = GPT.from_config(cfg)
    rules = cfg.rules()
    opt = build_optimizer(model, rules, betas=(cfg.beta1, cfg.beta2))
    batches = Batches(corpus, cfg.batch_size, cfg.seq_len, cfg.seed)
    captured = {}
    hook = model.transformer.h[-1].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("h", out.detach()))
    try:
        for step in range(steps + 1):
            x, y = batches.train_batch(step)
            logits, loss = model(x, y)
            yield (step, float(captured["h"].abs().mean()), float(logits.detach().abs().mean()))
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()  # constant LR: the groups keep their peak LRs
    finally:
        hook.remove()


def verdicts(rows: list[dict], axis: str) -> list[dict]:
    """Per parameterization: ratio of resid_abs_mean at the largest vs smallest shape on the
    last step, and whether it is stable (inside STABLE_BOUNDS) or growing/shrinking."""
    out = []
    key = "n_layer" if axis == "depth" else "n_embd"
    names = list(dict.fromkeys(r["parameterization"] for r in rows))
    for name in names:
        mine = [r for r in rows if r["parameterization"] == name]
        last = max(r["step"] for r in mine)
        final = {r[key]: r["resid_abs_mean"] for r in mine if r["step"] == last}
        small, large = min(final), max(final)
        ratio = final[large] / final[small] if final[small] > 0 else float("inf")
        if not np.isfinite(ratio):
            verdict = "diverged"
        elif ratio > STABLE_BOUNDS[1]:
            verdict = "growing"
        elif ratio < STABLE_BOUNDS[0]:
            verdict = "shrinking"
        else:
            verdict = "stable"
        out.append(dict(parameterization=name, axis=axis, step=last, smallest=small, largest=large,
                        resid_smallest=final[small], resid_largest=final[large], ratio=ratio,
                        verdict=verdict))
    return out
