"""Benchmark: how `runs import`, `fit --law chinchilla` and `recommend` scale.

Each measurement runs the real command line (``cli.main``) in a fresh Python process, so its
peak memory is that command's alone: peak resident set size (``ru_maxrss``) of the child, and
the same minus the child's size just before the command started (the interpreter and imports).

- import and fit at 1k, 10k and 100k rows (and 1M with ``--full``): a synthetic Chinchilla table
  (N log-uniform over 1e7–1e10, 5–100 tokens per parameter, L = E + A/N^α + B/D^β with Epoch's
  coefficients and 0.5% noise; seeded) written as CSV, imported into a new SQLite database with
  ``cp-plan runs import``, then fitted with ``cp-plan fit --law chinchilla`` (default bootstrap
  200 and held-out refit, as a user would run it);
- ``cp-plan recommend --params P`` at 1e9, 1e12 and 1e15 on the shipped database (laws cached).

Ratios are against the smallest size measured in the same run (time per row for import and
fit), so the figures compare across machines.

    python bench/scale_bench.py            # 1k / 10k / 100k rows, a few minutes on 2 cores
    python bench/scale_bench.py --full     # also 1M rows
    python bench/scale_bench.py --sizes 1000,5000 --no-recommend
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCH = dict(E=1.8172, A=477.8, B=2143.0, alpha=0.3473, beta=0.3672)


def _rss_mb() -> float:
    """Current resident set size of this process, in MB (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def child(argv: list[str]) -> None:
    """Run one cp-plan command line here and print {wall_s, peak_mb, base_mb, rc} as JSON."""
    sys.path.insert(0, str(ROOT))
    import cli  # noqa: F401 (the CLI's own imports are part of the baseline, not the measurement)
    import numpy  # noqa: F401 (baseline imports)
    import pandas  # noqa: F401

    base = _rss_mb()
    sys.argv = ["cp-plan", *argv]
    t0 = time.perf_counter()
    rc = 0
    stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        cli.main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.close()
        sys.stdout = stdout
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux
    print(json.dumps({"wall_s": wall, "peak_mb": peak, "base_mb": base, "rc": rc}))


def measure(argv: list[str], timeout_s: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"child failed: {' '.join(argv)}\n{proc.stderr[-2000:]}")
    if out["rc"] != 0:
        raise SystemExit(f"cp-plan {' '.join(argv)} exited {out['rc']}: {proc.stderr.strip()[-500:]}")
    return out


def synthetic_csv(n: int, path: Path, seed: int = 0) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n)).round()
    n_tokens = (n_params * np.exp(rng.uniform(np.log(5), np.log(100), n))).round()
    loss = (EPOCH["E"] + EPOCH["A"] / n_params ** EPOCH["alpha"] + EPOCH["B"] / n_tokens ** EPOCH["beta"])
    loss *= np.exp(rng.normal(0, 0.005, n))
    pd.DataFrame({"n_params": n_params, "n_tokens": n_tokens, "loss": loss}).to_csv(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="Comma list of row counts.")
    ap.add_argument("--full", action="store_true", help="Also 1,000,000 rows (import and fit).")
    ap.add_argument("--bootstrap", type=int, default=200, help="fit --bootstrap (the CLI default is 200).")
    ap.add_argument("--params", default="1e9,1e12,1e15", help="recommend --params values.")
    ap.add_argument("--no-recommend", action="store_true")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="Per command.")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    if args.full and 1_000_000 not in sizes:
        sizes.append(1_000_000)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            csv = Path(tmp) / f"runs{n}.csv"
            db = Path(tmp) / f"runs{n}.sqlite"
            synthetic_csv(n, csv)
            imp = measure(["runs", "import", str(csv), "--source", "bench", "--db", str(db), "--json"], args.timeout_s)
            fit = measure(["fit", "--law", "chinchilla", "--db", str(db), "--json",
                           "--bootstrap", str(args.bootstrap)], args.timeout_s)
            rows.append((n, csv.stat().st_size / 1e6, imp, fit))
            print(f"  measured {n:,} rows", file=sys.stderr, flush=True)

    n0, _, imp0, fit0 = rows[0]
    print(f"{'rows':>9} {'CSV MB':>7} | {'import s':>8} {'peak MB':>8} {'+MB':>7} {'s/row ×':>7} | "
          f"{'fit s':>7} {'peak MB':>8} {'+MB':>7} {'s/row ×':>7}")
    for n, mb, imp, fit in rows:
        r_imp = (imp["wall_s"] / n) / (imp0["wall_s"] / n0)
        r_fit = (fit["wall_s"] / n) / (fit0["wall_s"] / n0)
        print(f"{n:>9,} {mb:>7.1f} | {imp['wall_s']:>8.2f} {imp['peak_mb']:>8.0f} {imp['peak_mb'] - imp['base_mb']:>7.0f} "
              f"{r_imp:>7.2f} | {fit['wall_s']:>7.2f} {fit['peak_mb']:>8.0f} {fit['peak_mb'] - fit['base_mb']:>7.0f} {r_fit:>7.2f}")
    print(f"(peak MB: the command's process; +MB: above its size before the command; s/row ×: time per "
          f"row relative to {n0:,} rows; fit with --bootstrap {args.bootstrap})")

    if not args.no_recommend:
        print(f"\n{'recommend --params':>18} | {'s':>6} {'peak MB':>8}  × of first")
        first = None
        for p in args.params.split(","):
            rec = measure(["recommend", "--params", p.strip(), "--json"], args.timeout_s)
            first = first or rec["wall_s"]
            print(f"{p.strip():>18} | {rec['wall_s']:>6.2f} {rec['peak_mb']:>8.0f}  {rec['wall_s'] / first:.2f}")
        print("(the shipped database, laws from its cache; the default flat profile)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
