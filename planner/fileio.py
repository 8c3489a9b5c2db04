"""Output files written atomically, with OS errors as one-line messages.

Every file cp-plan writes for a user (``fit --out``, ``runs export``, ``report``, the
reproduction summary) goes through :func:`write_atomic`: the content is written to a temporary
file in the target's folder, flushed to disk, then renamed over the target (``os.replace``,
atomic on POSIX). A full disk or a killed process therefore leaves the previous file intact and
no half-written one, and ENOSPC, EACCES, EROFS ... become a :class:`CpPlanError` naming the
file, the reason and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from planner.errors import CpPlanError

_FIX = {  # the fix for an error writing an --out file
    errno.ENOSPC: "free some space or choose another --out",
    errno.EDQUOT: "free some space (disk quota) or choose another --out",
    errno.EACCES: "choose a folder you can write to (--out)",
    errno.EPERM: "choose a folder you can write to (--out)",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.ENOENT: "create the folder first or choose another --out",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENAMETOOLONG: "the name is longer than the file system allows (255 bytes a name); choose a shorter --out",
}
_FIX_ANY = {  # the fix for an error on any path (an input, --db, ...)
    errno.ENAMETOOLONG: "use a shorter name (at most 255 bytes per part of the path)",
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.ENOSPC: "free some disk space, or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.ELOOP: "the path runs through a loop of symbolic links; check the path",
}


def short_path(path: str | bytes | os.PathLike) -> str:
    """A path for a one-line message: quoted, and shortened when long (a 4000-byte name would
    bury the error)."""
    name = os.fsdecode(path)
    if len(name) <= 80:
        return repr(name)
    return f"{name[:40]!r}…{name[-20:]!r} ({len(name)} characters)"


def os_error_message(exc: OSError, path: str | os.PathLike | None = None, what: str | None = "write") -> str:
    """One line for an OSError: 'cannot write PATH: No space left on device; free some space ...'
    (``what`` = "write"), or for any path (``what`` None, the path from the error):
    'File name too long: PATH; use a shorter name ...'."""
    reason = exc.strerror or type(exc).__name__
    path = exc.filename if path is None else path
    if what is None:
        fix = _FIX_ANY.get(exc.errno, "check the path and try again")
        return f"{reason}: {short_path(path)}; {fix}" if path is not None else f"{reason}; {fix}"
    fix = _FIX.get(exc.errno, "check the path and the disk")
    return f"cannot {what} {short_path(path)}: {reason}; {fix}"


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[str], None], *,
                 mode: int = 0o644) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes the temporary path it
    is given) to ``path`` atomically (see the module docstring) and return the path written.
    A symlink is followed (the file it names is replaced, the link kept); an existing file keeps
    its mode; a device, FIFO or socket is refused, never replaced."""
    path = Path(path)
    try:
        if path.is_symlink():  # followed on purpose: the link stays, the file it names is replaced
            try:
                path = Path(os.path.realpath(path, strict=True))
            except FileNotFoundError:  # a dangling link: the file it names is created
                path = Path(os.path.realpath(path))
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise CpPlanError(f"cannot write {path}: it is a loop of symbolic links; give a file path") from None
                raise
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise CpPlanError(f"cannot write {path}: it is a folder; give a file name, e.g. {path / 'out.json'}")
        if not parent.is_dir():
            raise CpPlanError(f"cannot write {path}: folder {parent} does not exist; create it or choose another --out")
        st = os.stat(path) if path.exists() else None
    except OSError as exc:
        raise CpPlanError(os_error_message(exc, path)) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
                else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else
                "not a regular file")
        raise CpPlanError(f"cannot write {path}: it is {kind}; cp-plan replaces files atomically and never writes "
                          "over devices or pipes: give a file path (or omit --out to print to stdout)")
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)  # an existing file keeps its permissions
    tmp = None
    try:
        # the temporary name stays within 255 bytes whatever the target's (a legal 255-byte name included)
        stem = os.fsencode(path.name)[:120].decode("utf-8", "ignore")
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=parent)
        if callable(content):
            os.close(fd)
            content(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise CpPlanError(os_error_message(exc, path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path
