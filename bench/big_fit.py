"""A Chinchilla fit with bootstrap over a large imported table (issue 18: 100k runs in ≤ 10 s).

Two fits of the same synthetic table (Hoffmann et al.'s coefficients, 1% log-normal noise,
N and D log-uniform over the paper's range) in this process:

- baseline: the previous method, every bootstrap replicate refitted on all n runs and the
  4500-point start grid ranked on 20k runs;
- cp-plan: the m-out-of-n bootstrap (planner.fit.common.BOOT_MAX_ROWS runs per replicate,
  deviations scaled by √(m/n)) and the grid ranked on GRID_RANK_ROWS runs.

Prints both times and their ratio, the largest relative difference of the optima (the fit
itself uses every run in both) and each parameter's bootstrap standard error under both
methods (they estimate the same spread).

    python bench/big_fit.py                  # 100k runs, 200 replicates (about 1-2 min)
    python bench/big_fit.py --rows 30000 --bootstrap 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.fit import chinchilla, common  # noqa: E402
from planner.fitter import fit_law  # noqa: E402


def table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), rows))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), rows))
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0.0, 0.01, rows))
    return pd.DataFrame({"n_params": n, "n_tokens": d, "loss": loss, "flops": 6 * n * d})


def timed_fit(df: pd.DataFrame, bootstrap: int):
    t0 = time.perf_counter()
    res = fit_law("chinchilla", df, bootstrap=bootstrap, seed=0)
    return res, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    df = table(args.rows)
    fit_law("chinchilla", df.iloc[:2000], bootstrap=2, seed=0)  # warm imports
    ours, t_ours = timed_fit(df, args.bootstrap)
    with mock.patch.object(common, "BOOT_MAX_ROWS", 10**12), \
            mock.patch.object(chinchilla, "GRID_RANK_ROWS", chinchilla.RANK_MAX_ROWS):
        base, t_base = timed_fit(df, args.bootstrap)
    names = list(ours.names)
    diff = max(abs(ours.values[k] / base.values[k] - 1) for k in names)
    print(f"chinchilla fit, {args.rows} runs, {args.bootstrap} bootstrap refits")
    print(f"  baseline (every replicate on all runs): {t_base:6.1f} s")
    print(f"  cp-plan (m-out-of-n, m={common.BOOT_MAX_ROWS}):      {t_ours:6.1f} s   ratio {t_base / t_ours:.1f}x "
          f"faster (target: <= 10 s)")
    print(f"  optimum: largest relative difference {diff:.1e}")
    print("  bootstrap standard error, cp-plan / baseline:")
    for k in names:
        print(f"    {k:6s} {ours.values[k]:12.5g}  se {ours.stderr[k]:.3g} / {base.stderr[k]:.3g} "
              f"= {ours.stderr[k] / base.stderr[k]:.2f}")


if __name__ == "__main__":
    main()
