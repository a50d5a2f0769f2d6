"""Giving freed memory back to the operating system between stages.

A million-row sheet passes through several stages, each building large
temporary columns and freeing them again. Both allocators involved keep
freed memory for reuse rather than returning it: pyarrow's (mimalloc) and
the C library's (glibc's ``malloc``, which keeps freed blocks inside its
heap). Each stage's peak then lands on top of the last stage's leftovers,
and a dry run of a million rows ends up holding ~130 MB it no longer uses.
``release`` hands that memory back; it costs a few milliseconds.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


def release() -> None:
    """Return freed memory to the operating system: pyarrow's pool, then the C heap."""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None on other C libraries (musl, macOS, Windows), where it is skipped."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this Python runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim
