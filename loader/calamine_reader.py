"""Run python-calamine on one workbook and hand back one sheet's cells.

Importable (``read_rows``) and runnable on its own as a child process
(``python -I calamine_reader.py PATH SHEET BY_CONTENT MAX_COLUMNS [view]`` writes
the result, pickled, to stdout; with ``view``, an .xls sheet's hidden rows
and number formats too, read with xlrd). It imports only the standard library,
python-calamine and, for ``view``, xlrd, so the child starts in milliseconds.

``loader.workbooks`` runs it in a child for ``.xls`` files: calamine's
parser for Excel's old binary format can abort the whole process on a
damaged file (a corrupt record once made it ask for 700 GB of memory, and
Rust aborts when an allocation fails), which no ``except`` can catch. A
child that dies takes only itself down, and its panic messages stay in its
own stderr instead of reaching the user's terminal.

``read_rows`` (``open_sheet`` then ``rows_of``) never raises for a bad
file: it answers with a dict, ``{"name": ..., "rows": ...}`` or
``{"problem": ..., ...}``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any


def read_rows(
    path: str,
    sheet: str | int | None,
    *,
    by_content: bool,
    max_columns: int,
    collect: Callable[[Iterator[list[Any]], int], Any] | None = None,
) -> dict[str, Any]:
    """One sheet of ``path``: the first visible worksheet, or ``sheet`` by name or 0-based index.

    ``collect``, when given, receives the sheet's rows one at a time (each as
    long as the sheet is wide, from cell A1 on) and the width, and its answer
    is returned as ``rows``: it can keep them in a more compact form than a
    list of lists of Python objects.
    """
    return rows_of(open_sheet(path, sheet, by_content=by_content, max_columns=max_columns), collect)


def open_sheet(path: str, sheet: str | int | None, *, by_content: bool, max_columns: int) -> dict[str, Any]:
    """Parse one sheet of ``path``: ``{"name": ..., "sheet": ..., "width": ...}`` or ``{"problem": ...}``.

    The parse is the slow part of reading a workbook, and calamine does it
    without holding Python's GIL, so it can run in a thread while the
    loader does other work (``loader.early_read``). ``rows_of`` turns what
    it answers into rows.
    """
    from python_calamine import CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    def parse() -> dict[str, Any]:
        if by_content:
            with open(path, "rb") as handle:
                workbook = CalamineWorkbook.from_filelike(io.BytesIO(handle.read()))
        else:
            workbook = CalamineWorkbook.from_path(path)
        with workbook:
            metadata = workbook.sheets_metadata
            names = [m.name for m in metadata]
            if not names:
                return {"problem": "no sheets"}
            if sheet is None:
                # The first sheet a person sees: hidden sheets and chart sheets hold no contacts.
                shown = [
                    m.name
                    for m in metadata
                    if m.visible == SheetVisibleEnum.Visible and m.typ == SheetTypeEnum.WorkSheet
                ]
                name = shown[0] if shown else names[0]
            else:
                found = _named(names, sheet)
                if found is None:
                    return {"problem": "no such sheet", "names": names}
                name = found
            data = workbook.get_sheet_by_name(name)
        end = data.end
        width = end[1] + 1 if end is not None else 0
        if width > max_columns:
            return {"problem": "too wide", "name": name, "width": width}
        return {"name": name, "sheet": data, "width": width}

    return _answer(parse)


def rows_of(
    opened: dict[str, Any], collect: Callable[[Iterator[list[Any]], int], Any] | None
) -> dict[str, Any]:
    """What ``read_rows`` answers, from what ``open_sheet`` answered."""
    if "problem" in opened:
        return opened
    name, data, width = opened["name"], opened["sheet"], opened["width"]

    def convert() -> dict[str, Any]:
        if collect is None:
            return {"name": name, "rows": data.to_python(skip_empty_area=False)}
        collected = collect(_rows_from_a1(data, width), width)
        end = data.end
        if getattr(collected, "height", None) != (end[0] + 1 if end is not None else 0):
            # Not the rows to_python gives (an older calamine?): read them the plain way.
            return {"name": name, "rows": data.to_python(skip_empty_area=False)}
        return {"name": name, "rows": collected}

    return _answer(convert)


def _answer(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()``, with calamine's complaints about the file turned into a ``problem`` answer."""
    from python_calamine import CalamineError, PasswordError

    try:
        return work()
    except PasswordError:
        return {"problem": "password"}
    except (CalamineError, OSError, ValueError, TypeError) as exc:
        return {"problem": "damaged", "detail": " ".join(str(exc).split())}
    except BaseException as exc:
        # A Rust panic inside calamine arrives as pyo3's PanicException, a BaseException.
        if type(exc).__name__ != "PanicException":
            raise
        return {"problem": "damaged", "detail": "the reader gave up on it"}


def _rows_from_a1(data: Any, width: int) -> Iterator[list[Any]]:
    """The rows of ``data`` as ``to_python(skip_empty_area=False)`` gives them, one at a time.

    ``iter_rows`` starts at row 1 but at the first column in use, so rows are
    padded on the left when that is not column A; ``read_rows`` checks that
    the count came out right.
    """
    if data.start is None or data.end is None:
        return iter(())
    if data.start[1] == 0:
        return iter(data.iter_rows())  # already from A1: no per-row step in Python
    return _padded(data.iter_rows(), width)


def _padded(rows: Iterator[list[Any]], width: int) -> Iterator[list[Any]]:
    for row in rows:
        yield [""] * (width - len(row)) + row if len(row) < width else row


def _named(names: list[str], sheet: str | int) -> str | None:
    if isinstance(sheet, str) and sheet in names:
        return sheet
    if isinstance(sheet, int) or sheet.strip().isdigit():
        index = int(sheet)
        if 0 <= index < len(names):
            return names[index]
    return None


#: How long reading an .xls sheet's view may take, and the memory it may use beyond what the child
#: holds (xlrd takes about 6 bytes per byte of file; a damaged file can make it ask for gigabytes).
VIEW_SECONDS = 60
VIEW_MEMORY = 512 << 20
VIEW_MEMORY_PER_BYTE = 16


def with_view(path: str, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (a sheet read from the .xls at ``path``) with ``view``: its hidden rows and the
    formats showing a country code, as ``loader.workbook_view.xls_view`` reads them with xlrd, in
    plain values; or a ``damaged`` problem when xlrd cannot read them within the limits above.
    """
    import threading

    restore = _limit_memory(VIEW_MEMORY + VIEW_MEMORY_PER_BYTE * os.path.getsize(path))
    found: list[Any] = []
    reader = threading.Thread(target=lambda: found.append(_read_view(path, result["name"])), daemon=True)
    reader.start()
    reader.join(VIEW_SECONDS)  # the thread is left behind if it overruns: the child exits all the same
    if reader.is_alive():
        return {"problem": "damaged", "detail": f"reading which rows are hidden took over {VIEW_SECONDS} s"}
    restore()  # the rows are yet to be pickled
    if isinstance(found[0], str):
        return {"problem": "damaged", "detail": found[0]}
    return {**result, "view": found[0]}


def _read_view(path: str, name: str) -> tuple[frozenset[int], dict[tuple[int, int], str]] | str:
    """The view of sheet ``name``, or what is wrong with the file.

    ``loader.workbook_view`` is loaded from beside this file: in this child
    (``-I``) the ``loader`` package may not be importable, or be another copy.
    """
    try:
        return _view_of(path, name)
    except Exception:  # whatever went wrong, the rows cannot be read as the sheet shows them
        return "which of its rows are hidden cannot be read"


def _view_of(path: str, name: str) -> tuple[frozenset[int], dict[tuple[int, int], str]] | str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_callkaro_view", Path(__file__).with_name("workbook_view.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    try:
        view = module.xls_view(Path(path), name)
    except module.XlsUnreadable as exc:
        return str(exc)
    return view.hidden_rows, view.formats


def _limit_memory(more: int) -> Callable[[], None]:
    """Let this process use ``more`` bytes of address space beyond what it uses now (where the system
    allows such a limit): past it, an allocation fails with MemoryError instead of exhausting the
    machine. Answers how to lift the limit again."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * resource.getpagesize()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        wanted = used + more if hard == resource.RLIM_INFINITY else min(used + more, hard)
        if soft != resource.RLIM_INFINITY and wanted >= soft:
            return lambda: None
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ImportError, OSError, ValueError):
        return lambda: None  # not Linux: the parent's time limit still bounds the child


if __name__ == "__main__":
    source, chosen, content, columns = sys.argv[1:5]
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries only the answer, whatever a library prints
    result = read_rows(source, json.loads(chosen), by_content=content == "1", max_columns=int(columns))
    if sys.argv[5:] == ["view"] and "rows" in result:
        result = with_view(source, result)
    answer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    answer.flush()
    os._exit(0)  # a view reader left overrunning in its thread is not waited for
