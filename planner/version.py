"""Which code produced a run or a report: the git commit of this checkout, else the package version."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the cp-plan checkout (``+dirty`` with uncommitted changes to tracked
    files), else the installed package version, else "unknown"."""
    root = Path(__file__).resolve().parents[1]
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

        top = git("rev-parse", "--show-toplevel")
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root:
            head = git("rev-parse", "HEAD")
            if head.returncode == 0:
                dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
                return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "cp-plan " + importlib.metadata.version("cp-plan")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
