"""Every read-only command's --json output on the shipped database, saved or compared byte for
byte: the check that a refactoring changed no behaviour (issue 19).

    python scripts/json_outputs.py save /tmp/before     # before the change
    python scripts/json_outputs.py compare /tmp/before  # after it: exit 1 on any difference

Each command runs as a user runs it (`python -m cli ...`, a fresh process) from the project root,
on the shipped database and its laws cache; stderr is kept beside stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming", "--json"],
    ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming", "--json", "--curves"],
    ["recommend", "--params", "1e8", "--json"],
    ["recommend", "--flops", "1e20", "--hardware", "gpu", "-p", "mup", "--json"],
    ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming"],
    ["recommend", "--params", "1.5e9", "--hardware", "weight-streaming", "--details"],
    ["recommend", "--params", "1.5e9", "--export", "json"],
    ["recommend", "--params", "1.5e9", "--export", "megatron"],
    ["predict", "--n-embd", "512", "--n-layer", "8", "--json"],
    ["predict", "--n-embd", "2048", "--n-layer", "48", "-p", "sp", "--json"],
    ["predict", "--n-embd", "512", "--n-layer", "8"],
    ["fit", "--law", "shape", "--json"],
    ["fit", "--law", "compute", "--json"],
    ["fit", "--law", "chinchilla", "--json"],
    ["fit", "--law", "shape"],
    ["runs", "list", "--json"],
    ["runs", "list", "--json", "--where", "n_layer>4", "--status", "failed"],
    ["runs", "list"],
    ["next", "--budget-flops", "1e15", "--json", "--out", "/tmp/cp-plan-json-outputs-next.json"],
    ["hparams", "--n-embd", "1024", "--n-layer", "32", "-p", "completep", "--json"],
    ["hparams", "--n-embd", "1024", "--n-layer", "32", "-p", "sp", "--json"],
    ["hparams", "--n-embd", "1024", "--n-layer", "32", "-p", "completep"],
]


def run(cmd: list[str]) -> bytes:
    r = subprocess.run([sys.executable, "-m", "cli", *cmd], cwd=ROOT, capture_output=True, timeout=600)
    return r.stdout + b"\n--- stderr ---\n" + r.stderr + f"\n--- exit {r.returncode} ---\n".encode()


def name(cmd: list[str]) -> str:
    return "_".join(c.strip("-").replace("/", "") for c in cmd[:3]) + "-" + hashlib.sha1(" ".join(cmd).encode()).hexdigest()[:8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["save", "compare"])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    differ = 0
    for cmd in COMMANDS:
        got = run(cmd)
        path = args.folder / f"{name(cmd)}.out"
        if args.action == "save":
            path.write_bytes(got)
            print(f"saved  {' '.join(cmd)}")
        else:
            same = path.exists() and path.read_bytes() == got
            differ += not same
            print(f"{'same  ' if same else 'DIFFER'} {' '.join(cmd)}")
    if args.action == "compare":
        print(f"{len(COMMANDS) - differ} of {len(COMMANDS)} byte-identical")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
