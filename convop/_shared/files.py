"""Files that never lie: atomic writes, and the one exception for corrupt files.

:func:`atomic_write` replaces a file by a complete new one or leaves it as it was: it writes
a temporary file in the target's directory, syncs it, checks its size, gives it the
permissions ``open()`` would, renames it into place and syncs the directory; every failure
raises an ``OSError`` naming the target and the cause. Readers that validate what they read
raise :class:`CorruptFile`, which public functions turn into one ``ValueError`` naming the
file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


class CorruptFile(Exception):
    """A file that is not what it claims to be (callers re-raise it as ``ValueError``)."""


def require(ok: np.ndarray, message: Callable[[int], str]) -> None:
    """Raise ``CorruptFile(message(i))`` for the first ``i`` where ``ok`` is False."""
    if not ok.all():
        raise CorruptFile(message(int(np.argmin(ok))))


def atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``target`` by what ``write(file)`` writes, all or nothing.

    A symbolic link is followed (the file it points to is replaced, the link kept); a
    target that is a directory or exists but is not a regular file is refused.
    """
    real = Path(os.path.realpath(target))  # through a symbolic link, not over it
    mode = _mode_for(real, target)
    directory = real.parent
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{real.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            written, on_disk = file.tell(), os.fstat(file.fileno()).st_size
        if on_disk != written:
            raise OSError(errno.EIO, f"the file holds {on_disk} bytes, {written} were written")
        os.chmod(temp, mode)
        os.replace(temp, real)
        temp = None
    except OSError as error:
        raise _write_error(target, directory, error) from error
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    _sync_directory(directory, target)


def _mode_for(real: Path, target: Path) -> int:
    """The permissions ``open(target, "wb")`` would leave: the existing file's, else the umask's.

    Refuses a target that is a directory or exists but is not a regular file (a device, a
    pipe), which ``os.replace`` would silently replace.
    """
    try:
        status = os.stat(real)
    except OSError:  # a missing file (or an unreadable directory, reported by mkstemp)
        return 0o666 & ~_umask()
    if stat.S_ISDIR(status.st_mode):
        raise _write_error(target, real.parent, OSError(errno.EISDIR, "is a directory"))
    if not stat.S_ISREG(status.st_mode):
        raise _write_error(target, real.parent, OSError(errno.EEXIST, "not a regular file"))
    return stat.S_IMODE(status.st_mode)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read by setting, restored at once
    os.umask(mask)
    return mask


def _write_error(target: Path, directory: Path, error: OSError) -> OSError:
    """An OSError (same errno, so the same subclass) saying what went wrong, in words."""
    reasons = {
        errno.ENOENT: f"directory {directory} does not exist",
        errno.ENOTDIR: f"{directory} is not a directory",
        errno.EISDIR: "it is a directory",
        errno.EEXIST: "it exists and is not a regular file",
        errno.EACCES: f"no permission to write in directory {directory}",
        errno.EPERM: f"no permission to write in directory {directory}",
        errno.EROFS: f"directory {directory} is on a read-only file system",
        errno.ENOSPC: "no space left on the device",
    }
    reason = reasons.get(error.errno, error.strerror or str(error))
    message = f"cannot write {target}: {reason}; nothing was changed"
    return OSError(error.errno, message) if error.errno is not None else OSError(message)


def _sync_directory(directory: Path, target: Path) -> None:
    """Make the rename durable, where the OS can open and sync a directory (POSIX)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # e.g. a write-only directory: the rename is done, only not yet synced
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise OSError(
                error.errno, f"wrote {target}, but could not sync its directory: {error}"
            ) from error
    finally:
        os.close(fd)
