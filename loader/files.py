"""What the loader reads and writes must be a regular file: the one rule, in one place.

A device (``/dev/zero``, ``/dev/urandom``) never ends, a FIFO blocks until
someone writes to it, a socket cannot be opened at all; a symlink to one is
the same thing under another name. So every file the loader reads (the
contacts sheet, a do-not-call list, ``--config``, ``.env``) is opened
without blocking and refused unless it is a regular file, and it is read
only up to its limit (``loader.limits``): the bytes actually read count,
not the size the file claims, so a file that keeps growing stops there.

Every file the loader writes (``--output`` and its state, ``--summary-json``,
``--log-file``, ``--report``, a template) replaces a regular file or is
created new. Anything else at that path is refused before a call is made:
the atomic rename that writes results would otherwise replace ``/dev/full``
or a FIFO with a regular file, and a symlink to one is refused the same
way. A dangling symlink is refused too: writing through it would create a
file wherever it points, a place nobody chose for this run. A symlink to a
regular file is written through, as an editor would.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import IO, BinaryIO

from loader.errors import InputFileError, UsageError

#: Bytes read at a time from a file read whole.
_CHUNK = 1024 * 1024


def not_a_file(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file (``"a folder"``...); None when it is one."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path, *, limit: int | None = None) -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file (of at most ``limit`` bytes).

    Opened with ``O_NONBLOCK`` so that a FIFO cannot hang the open; what was opened
    (not what the name pointed to a moment before) is then checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a socket gives
            raise InputFileError(
                path, "is a socket, not a file; the loader reads only regular files"
            ) from None
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    found = os.fstat(fd)
    what = not_a_file(found.st_mode)
    if what is not None:
        os.close(fd)
        raise InputFileError(path, f"is {what}, not a file; the loader reads only regular files")
    if limit is not None and found.st_size > limit:
        os.close(fd)
        raise InputFileError(path, f"is larger than {size_text(limit)}, the most the loader reads")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def size_text(limit: int) -> str:
    """``limit`` bytes as people say it: ``2 GiB``, ``1 MiB``, ``512 bytes``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if limit >= size:
            return f"{limit / size:g} {unit}"
    return f"{limit} bytes"


def read_bounded(handle: BinaryIO | io.RawIOBase, limit: int, *, path: Path, what: str) -> bytes:
    """Everything ``handle`` holds, refused once more than ``limit`` bytes have been read.

    ``what`` names the limit for the message (e.g. ``"2 GiB, the most the loader reads"``).
    """
    parts: list[bytes] = []
    read = 0
    while True:
        chunk = handle.read(min(_CHUNK, limit + 1 - read))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        read += len(chunk)
        if read > limit:
            raise InputFileError(path, f"is larger than {what}")


def read_regular(path: Path, limit: int, *, what: str) -> bytes:
    """The bytes of regular file ``path``, up to ``limit`` (see ``read_bounded``)."""
    with open_regular(path) as handle:
        return read_bounded(handle, limit, path=path, what=what)


def check_output(path: Path, option: str) -> None:
    """Refuse ``path`` as ``option``'s output unless it is a regular file or nothing yet (see above)."""
    try:
        found = os.stat(path)  # follows symlinks: what a write would reach
    except FileNotFoundError:
        if path.is_symlink():
            raise UsageError(
                f"{option} {path} is a symlink to nothing ({os.readlink(path)}); "
                "the loader writes only regular files",
                hint="Remove the symlink or give another path.",
            ) from None
        return
    except OSError:
        return  # the write itself reports what is wrong (a missing folder, no permission)
    what = not_a_file(found.st_mode)
    if what is not None and what != "a folder":  # a folder has its own message where it is given
        target = f" (through the symlink to {os.path.realpath(path)})" if path.is_symlink() else ""
        raise UsageError(
            f"{option} {path} is {what}{target}, not a file; the loader writes only regular files",
            hint="Give the path of a file to create or replace.",
        )


def write_target(path: Path) -> Path:
    """Where writing ``path`` atomically must put the new file: through a symlink, at its target, so
    the symlink keeps pointing at the new content instead of being replaced by it.

    Raises ``OSError`` when what is there is not a regular file (or a symlink to nothing): the last
    guard, for writes no earlier ``check_output`` covered (a failure recorded as the run stops).
    """
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        what = not_a_file(os.stat(target).st_mode)
    except FileNotFoundError:
        if target is not path:
            raise OSError(errno.ENOENT, "it is a symlink to nothing", str(path)) from None
        return target
    except OSError:
        return target  # a file where a folder should be, no permission: the write itself says so
    if what is not None and what != "a folder":  # a folder: the rename fails, saying so
        raise OSError(errno.EINVAL, f"it is {what}, not a regular file", str(path))
    return target


def open_append(path: Path) -> IO[str]:
    """``path`` opened to append UTF-8 lines, created if need be; ``OSError`` unless a regular file.

    ``O_NONBLOCK``: a FIFO with no reader fails at once (ENXIO) instead of hanging the run.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    what = not_a_file(os.fstat(fd).st_mode)
    if what is not None:
        os.close(fd)
        raise OSError(errno.EINVAL, f"it is {what}, not a regular file", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")
