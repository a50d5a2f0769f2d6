"""Reading spreadsheets (.xlsx, .xlsm, .xls, .ods) with python-calamine, safely.

A workbook is checked before any parser sees it: a zip's directory must
not promise a decompression bomb, and no XML part may declare a document
type (the door to entity-expansion and external-entity attacks); see
``loader.limits``. Then calamine (``loader.calamine_reader``) reads the
cached value of every cell (formulas are not recalculated) with the type
the spreadsheet gave it: text, number, boolean, date, date-time, time or
duration. Excel 97-2003 ``.xls`` files are read in a child process, since
a damaged one can crash calamine's binary parser outright.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loader import calamine_reader
from loader.calamine_reader import read_rows
from loader.cells import Cell
from loader.columnar import Columns, collect_columns
from loader.errors import InputFileError
from loader.formats import OLE2, SUFFIX_KINDS, Kind
from loader.limits import (
    MAX_COLUMNS,
    MAX_COMPRESSION_RATIO,
    MAX_UNCOMPRESSED_BYTES,
    MAX_XML_PROLOG_BYTES,
    MAX_ZIP_MEMBERS,
    RATIO_CHECKED_ABOVE_BYTES,
)

_XML_PARTS = (".xml", ".rels", ".vml")
_PROLOG_ITEM = re.compile(r"\s+|\ufeff|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_DAMAGED_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error)


def read_workbook(path: Path, kind: Kind, sheet: str | int | None) -> tuple[Columns, str]:
    """The cells of one sheet of ``path`` (row ``r`` is spreadsheet row ``r + 1``) and its name.

    The cells are gathered a slice of rows at a time so that a million-row
    sheet never exists as a million Python lists; ``.xls`` sheets, read in a
    child process, arrive as rows and are gathered the same way.
    """
    if kind in ("xlsx", "xlsb", "ods"):
        check_zip(path)
    return _read(path, kind, sheet)


def check_zip(path: Path) -> None:
    """Refuse a zip whose directory promises a bomb, or whose XML declares a document type."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ZIP_MEMBERS:
                raise InputFileError(
                    path, f"holds {len(infos):,} parts, more than the {MAX_ZIP_MEMBERS:,} any workbook has"
                )
            total = sum(info.file_size for info in infos)
            if total > MAX_UNCOMPRESSED_BYTES:
                raise InputFileError(
                    path,
                    f"would unpack to {_size(total)}, more than the {_size(MAX_UNCOMPRESSED_BYTES)} the "
                    "loader accepts (a decompression bomb?); refusing to open it",
                )
            for info in infos:
                if (
                    info.file_size > RATIO_CHECKED_ABOVE_BYTES
                    and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
                ):
                    ratio = info.file_size // max(info.compress_size, 1)
                    raise InputFileError(
                        path,
                        f"its part {info.filename} would unpack {ratio:,} times larger than it is stored "
                        "(a decompression bomb?); refusing to open it",
                    )
            for info in infos:
                if info.filename.lower().endswith(_XML_PARTS):
                    _check_xml_prolog(path, archive, info)
    except RuntimeError:  # zip-level encryption
        raise InputFileError(path, "is a password-protected zip file; remove the password first") from None
    except _DAMAGED_ZIP:
        raise InputFileError(path, "is a damaged workbook (its zip structure cannot be read)") from None


def _check_xml_prolog(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Look at what comes before the root element of one XML part; a ``<!DOCTYPE`` is refused."""
    with archive.open(info) as handle:
        data = handle.read(4096)
        at_end = len(data) < 4096
        while True:
            text = _xml_text(data)
            position = 0
            while match := _PROLOG_ITEM.match(text, position):
                position = match.end()
            rest = text[position:]
            unfinished = len(rest) < 9 or rest.startswith(("<?", "<!--"))
            if not unfinished or at_end:
                break
            if len(data) >= MAX_XML_PROLOG_BYTES:
                raise InputFileError(
                    path,
                    f"its part {info.filename} starts with more than {_size(MAX_XML_PROLOG_BYTES)} "
                    "of preamble; refusing to open it",
                )
            more = handle.read(min(len(data), MAX_XML_PROLOG_BYTES - len(data)))
            at_end = not more
            data += more
    if rest[:9].upper() == "<!DOCTYPE":
        raise InputFileError(
            path,
            f"its part {info.filename} declares an XML document type, which workbooks never do and XML "
            "entity attacks need; refusing to open it",
        )


def _xml_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "ignore")
    if data[1:2] == b"\x00":
        return data.decode("utf-16-le", "ignore")
    if data[:1] == b"\x00":
        return data.decode("utf-16-be", "ignore")
    return data.decode("latin-1")


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


_PASSWORD = "is password-protected; open it, remove the password (File > Info > Protect Workbook) and save it"
#: How long a child process may take over one .xls file.
XLS_SECONDS = 300


def _read(path: Path, kind: Kind, sheet: str | int | None) -> tuple[Columns, str]:
    by_content = SUFFIX_KINDS.get(path.suffix.lower()) != kind  # the suffix lies: go by the bytes
    if kind == "xls":
        result = _read_in_child(path, sheet, by_content=by_content)
    else:
        result = read_rows(
            str(path), sheet, by_content=by_content, max_columns=MAX_COLUMNS, collect=collect_columns
        )
    problem = result.get("problem")
    if problem is None:
        found: list[list[Cell]] | Columns = result["rows"]
        if not isinstance(found, Columns):
            found = collect_columns(_padded(found), max(map(len, found), default=0))
        found.check_cell_sizes(path)
        return found, str(result["name"])
    if problem == "no sheets":
        raise InputFileError(path, "the workbook has no sheets")
    if problem == "no such sheet":
        names = result["names"]
        listed = ", ".join(repr(n) for n in names)
        raise InputFileError(path, f"has no sheet {sheet!r}; its sheets are {listed} (or 0-{len(names) - 1})")
    if problem == "too wide":
        raise InputFileError(
            path,
            f"sheet {result['name']!r} has something in {result['width']:,} columns; the loader reads at "
            f"most {MAX_COLUMNS:,}, far more than any contacts sheet has",
        )
    if problem == "password":
        raise InputFileError(path, _PASSWORD)
    raise InputFileError(path, _damaged(path, _shortened(str(result.get("detail", "")))))


def _read_in_child(path: Path, sheet: str | int | None, *, by_content: bool) -> dict[str, Any]:
    """``read_rows`` in a child process, so a crash in the .xls parser cannot take the loader with it."""
    import json
    import pickle
    import subprocess
    import sys

    if not sys.executable:  # embedded Python with no interpreter to start: read in this process
        return read_rows(str(path), sheet, by_content=by_content, max_columns=MAX_COLUMNS)
    command = [
        sys.executable,
        "-I",
        calamine_reader.__file__,
        str(path),
        json.dumps(sheet),
        "1" if by_content else "0",
        str(MAX_COLUMNS),
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=XLS_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return {"problem": "damaged", "detail": f"reading it took more than {XLS_SECONDS} seconds"}
    if done.returncode != 0 or not done.stdout:
        return {"problem": "damaged", "detail": "the reader crashed on it"}
    # Our own child wrote this, from values calamine produced: not data from the file itself.
    result: dict[str, Any] = pickle.loads(done.stdout)
    return result


def _damaged(path: Path, detail: str) -> str:
    """What to say about a workbook calamine cannot read, using what the file's bytes show."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head == OLE2:
        data = path.read_bytes()
        if "EncryptedPackage".encode("utf-16-le") in data:
            return _PASSWORD
        if "WordDocument".encode("utf-16-le") in data:
            return "is a Word document, not a workbook"
        if "PowerPoint Document".encode("utf-16-le") in data:
            return "is a PowerPoint presentation, not a workbook"
    return f"is a damaged workbook the loader cannot read ({detail})"


def _shortened(text: str) -> str:
    return text if len(text) <= 160 else text[:159] + "…"


def _padded(rows: list[list[Cell]]) -> Iterator[list[Cell]]:
    """``rows``, each as long as the longest."""
    width = max(map(len, rows), default=0)
    for row in rows:
        yield row if len(row) == width else [*row, *[""] * (width - len(row))]
