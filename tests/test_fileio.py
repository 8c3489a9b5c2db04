"""Outputs written atomically without replacing what --out points at (planner.fileio.write_atomic)."""

from __future__ import annotations

import os
import stat

import pytest

from planner.errors import CpPlanError
from planner.fileio import write_atomic


def test_a_fifo_or_device_is_refused_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(CpPlanError, match="FIFO"):
        write_atomic(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if os.geteuid() == 0:  # mknod needs root (CI runs as root)
        dev = tmp_path / "null"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        with pytest.raises(CpPlanError, match="character device"):
            write_atomic(dev, "x")
        assert stat.S_ISCHR(os.stat(dev).st_mode)
    with pytest.raises(CpPlanError, match="character device"):
        write_atomic("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlink_is_followed_and_kept_and_a_files_mode_is_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_name_over_255_bytes_is_a_one_line_error(tmp_path):
    with pytest.raises(CpPlanError, match="longer than the file system allows"):
        write_atomic(tmp_path / ("x" * 300 + ".json"), "x")


@pytest.mark.parametrize("args", [
    ["recommend", "--params", "1e8", "--export", "megatron", "--out", "{out}"],
    ["runs", "export", "--out", "{out}"],
    ["fit", "--law", "compute", "--out", "{out}"],
])
def test_commands_never_replace_a_fifo_given_as_out(tmp_path, args):
    import subprocess
    import sys
    from pathlib import Path

    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "cli", *[a.format(out=fifo) for a in args]], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "FIFO" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
