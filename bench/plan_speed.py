"""How long a user waits for a plan: `cp-plan recommend` cold (a fresh process on the shipped
database, laws cached) against `python -c pass` in the same run, as a ratio.

    python bench/plan_speed.py --repeat 7

Issue 18 asks for at most 0.3 s; the ratio to an empty interpreter makes the figure comparable
across machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming", "--json"]


# A user's install keeps compiled bytecode; a shell with PYTHONDONTWRITEBYTECODE set (some CI and
# container images) would recompile every module at each start (about 0.08 s here) and time that.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    timed([sys.executable, "-m", "cli", *ARGS])  # warm the laws cache and the .pyc files
    plan = [timed([sys.executable, "-m", "cli", *ARGS]) for _ in range(args.repeat)]
    empty = [timed([sys.executable, "-c", "pass"]) for _ in range(args.repeat)]
    p, e = statistics.median(plan), statistics.median(empty)
    print(f"recommend cold: median {p:.3f} s over {args.repeat}; python -c pass: {e:.3f} s; ratio {p / e:.1f}x "
          f"(target: 0.3 s)")


if __name__ == "__main__":
    main()
