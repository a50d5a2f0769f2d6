"""Parse a workbook in the background while the loader is still starting.

Importing pandas, pyarrow and pandera takes about half a second, about as
long as calamine takes to parse a 100,000-row sheet, and calamine parses
without holding Python's GIL. So the command line, as soon as it knows the
input file and has checked the options, calls ``start``, which checks the
workbook exactly as ``loader.workbooks`` would (``loader.zip_checks`` first:
nothing unsafe is parsed early) and parses it in a thread, with what the sheet
shows beyond its values (``loader.workbook_view``); the reader then ``take``s the
parsed sheet instead of parsing again. What the thread answers is only a
head start: when anything differs (the file changed, another sheet was
asked for, the check or the parse failed) the reader reads as usual and
reports what it finds in its own words.

This module imports only the standard library and the loader's own light
modules, so it can run before the heavy imports it overlaps.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

from loader.calamine_reader import open_sheet
from loader.formats import SUFFIX_KINDS, ZIPPED, by_content, sniff
from loader.limits import MAX_COLUMNS
from loader.workbook_view import Ahead
from loader.zip_checks import check_zip

#: Larger workbooks are parsed when the reader asks: beyond this size the half
#: second of start-up saved is small next to the parse itself. The thread is
#: not a daemon (a daemon thread coming back from Rust while Python shuts down
#: can abort the process); ``loader.cli.entry`` ends a process whose run
#: stopped before reading without waiting for it (``unneeded``).
MAX_BYTES = 16 * 1024 * 1024

_pending: _EarlyRead | None = None
#: Set when the last early parse ends (not the parse itself: its sheet must be freed once read).
_last_done: threading.Event | None = None
#: Whether the reader passed the last early parse over (another sheet, a changed file) and parsed itself.
_superseded = False


class _EarlyRead:
    def __init__(self, path: Path, sheet: str | int | None, identity: tuple[int, ...]) -> None:
        self.path = path
        self.sheet = sheet
        self.identity = identity
        self.by_content = False
        self.opened: dict[str, Any] | None = None
        # Waited on instead of the thread: Python 3.11 takes a thread whose join() was
        # interrupted by Ctrl-C for ended, and would then not wait for it at exit.
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._parse, name="callkaro-early-read")

    def _parse(self) -> None:
        try:
            self._open()
        finally:
            self.done.set()

    def _open(self) -> None:
        try:
            kind = sniff(self.path)
            if kind not in ZIPPED:
                return
            check_zip(self.path)
            self.by_content = by_content(self.path, kind)
            ahead = Ahead(self.path, kind, self.sheet)
            opened = open_sheet(
                str(self.path), self.sheet, by_content=self.by_content, max_columns=MAX_COLUMNS
            )
            if "problem" not in opened:
                # What the sheet shows beyond its values (hidden rows...): its XML is read here too.
                end = opened["sheet"].end
                opened["view"] = ahead.view(opened["name"], end[0] + 1 if end else 0)
        except Exception:  # the reader meets the same problem again and explains it
            return
        self.opened = opened  # a problem too: the reader would find the same in the same file


def start(path: str | Path, sheet: str | int | None) -> None:
    """Begin parsing ``path`` (its ``sheet``) in the background, when it is a workbook worth it."""
    global _pending, _last_done, _superseded
    _pending = None
    path = Path(path)
    if SUFFIX_KINDS.get(path.suffix.lower()) not in ZIPPED:
        return
    identity = _identity(path)
    if identity is None or identity[-1] > MAX_BYTES:
        return
    early = _EarlyRead(path, sheet, identity)
    try:
        early.thread.start()
    except RuntimeError:  # no thread to be had (a process or memory limit): the reader parses
        return
    _pending, _last_done, _superseded = early, early.done, False


def take(path: Path, sheet: str | int | None, *, by_content: bool) -> dict[str, Any] | None:
    """What ``open_sheet`` answers for this file and sheet, if it was parsed early; else None."""
    global _pending, _superseded
    early, _pending = _pending, None  # the reader reads once: an early parse it cannot use is let go now
    if early is None:
        return None
    if early.sheet != sheet or _identity(path) != early.identity:
        _superseded = True
        return None
    early.done.wait()
    if early.by_content != by_content or _identity(path) != early.identity:
        return None
    return early.opened


def discard() -> None:
    """Forget an early parse nobody took. Its thread ends by itself, and its memory goes with it;
    not waiting here lets a stopped run say so at once (``wait`` is for the end of the process)."""
    global _pending
    _pending = None


def wait() -> None:
    """Wait for the last early parse to end, whether or not it was taken."""
    if _last_done is not None:
        _last_done.wait()


def unneeded() -> bool:
    """Whether the last early parse still runs for a run that stopped before reading its sheet
    (a usage error, Ctrl-C): nothing will use it, and the process can end without it."""
    return _last_done is not None and not _superseded and not _last_done.is_set()


def _identity(path: Path) -> tuple[int, ...] | None:
    """The file behind ``path`` as it is now: device, inode, modification and change times, size.

    The change time too: the modification time can be set back (``cp -p``, ``touch -r``, ``os.utime``)
    after the file was rewritten in place; the change time cannot. None for anything but a regular
    file: a pipe named .xlsx can be read only once, and that read is the reader's.
    """
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return (found.st_dev, found.st_ino, found.st_mtime_ns, found.st_ctime_ns, found.st_size)
