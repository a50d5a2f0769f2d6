"""Reading delimited text: encodings, separators, quotes and ragged rows.

What arrives as "CSV" is written by Excel on Windows (cp1252, or UTF-16
"Unicode Text" with tabs), European Excel (semicolons, decimal commas),
Google Sheets and LibreOffice (UTF-8), CRMs and web forms (anything). The
steps, each in its own function:

``decode``
    A byte-order mark decides (UTF-8, UTF-16, UTF-32); else valid UTF-8 is
    UTF-8; else charset-normalizer decides, preferring Windows-1252 (which
    reads Latin-1 text the same) whenever it reads the bytes as cleanly as
    the detector's best guess, since that is what Excel writes in the
    regions that send such files. ``--encoding`` overrides all of this.
``detect_delimiter``
    ``,`` ``;`` tab or ``|``: the one that splits the header and the rows
    below it into the same number of cells. A first line ``sep=;`` (which
    Excel writes and reads) decides it outright.
``parse``
    The csv module, which keeps every row, quoted commas and newlines
    included, and counts rows as a spreadsheet shows them (a quoted cell
    spanning lines is one row). A quote never closed, or a cell longer than
    ``loader.limits.MAX_CELL_CHARS``, refuses the file.
``ragged_rows``
    Rows with fewer cells than the header, or more non-blank cells: each
    one is reported on its own row (its values may sit under the wrong
    headers), and the rest of the file loads.
``read_with_arrow``
    The fast path for the common case (UTF-8, every row as wide as the
    first): pyarrow's CSV reader straight from the file into compact text
    columns, about ten times faster than the csv module and without a
    Python object per cell. It is taken only where it gives the very cells
    the csv module gives (``tests/test_text_engines.py`` compares the two on
    every fixture and on random text); whatever it cannot do the same way
    (other encodings, ragged rows, a quote left open, an over-long cell, a
    NUL byte) it hands back, cheaply, to the steps above, which stay the
    reference.

Every cell stays the exact text written: nothing becomes a number here.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loader.errors import InputFileError, UsageError
from loader.files import read_regular, size_text
from loader.limits import MAX_CELL_CHARS, MAX_COLUMNS, MAX_INPUT_BYTES

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma (,)", ";": "semicolon (;)", "\t": "tab", "|": "bar (|)"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: How much of a file the encoding detector and the delimiter detector look at.
_SAMPLE_BYTES = 256 * 1024
_SAMPLE_CHARS = 64 * 1024
#: charset-normalizer's "chaos" may be this much worse for Windows-1252 and it is still preferred.
_CP1252_TOLERANCE = 0.02
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")
_SEP_LINE = re.compile(r"sep=(.)(?:\r\n|\r|\n)", re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: A cell that opened a quote after a space (``a, "b, c"``): the csv module keeps such
#: quotes as text, so the separator inside them splits the value.
_SPACED_QUOTE = re.compile(r'[ \t]+"')


@dataclass(frozen=True)
class TextTable:
    """The rows of a text file (row ``i`` is spreadsheet row ``i + 1``) and how it was read.

    The cells are either ``rows`` (the csv module's lists) or ``columns``
    (pyarrow text columns of equal length, from ``read_with_arrow``).
    """

    rows: list[list[str]] | None
    encoding: str
    delimiter: str
    #: Spreadsheet row -> what is wrong with its shape, for rows below the header.
    ragged: Mapping[int, str] = field(default_factory=dict)
    columns: list[Any] | None = None


def read_text_table(
    path: Path,
    *,
    encoding: str | None,
    suffix: str,
    header_row: int,
    engine: str = "auto",
) -> TextTable:
    """Decode, split and parse the file; refuse it when it is not a text table.

    ``engine="auto"`` tries ``read_with_arrow`` first and falls back to the
    csv module; ``"csv"`` uses the csv module only (the reference).
    """
    if engine == "auto" and encoding is None:
        fast = read_with_arrow(path, suffix=suffix, header_row=header_row)
        if fast is not None:
            return fast
    text, used = decode(path, read_input(path), encoding)
    if not text.strip():
        raise InputFileError(path, "the file is empty")
    sep_line = _SEP_LINE.match(text)
    if sep_line and sep_line.group(1) in DELIMITERS:
        delimiter = sep_line.group(1)
        text = text[sep_line.end() :]
    else:
        delimiter = detect_delimiter(text, suffix=suffix, header_row=header_row)
    rows = parse(path, text, delimiter)
    _check_width(path, rows)
    return TextTable(
        rows=rows,
        encoding=used,
        delimiter=delimiter,
        ragged=ragged_rows(rows, header_row=header_row, delimiter=delimiter),
    )


def read_input(path: Path) -> bytes:
    """The bytes of a contacts sheet or do-not-call list, refused past ``MAX_INPUT_BYTES`` read."""
    return read_regular(
        path, MAX_INPUT_BYTES, what=f"{size_text(MAX_INPUT_BYTES)}, the most the loader reads"
    )


# --- encodings -------------------------------------------------------------------------


#: Text codecs made for domain names, not files: no spreadsheet program writes them.
_NAME_CODECS = frozenset({"punycode", "idna"})
#: Characters every contacts file has; an encoding for files gives them back as they were.
_ASCII_SAMPLE = 'Phone,Name;\t"x"\r\n'


def check_encoding_name(encoding: str) -> str:
    """``--encoding`` as Python's codec name; a name Python does not know, or a codec that does not
    turn bytes into text (``hex``, ``base64``, ``zlib``, ``rot13``, ``undefined``...), is a usage error."""
    hint = "Try utf-8, cp1252, latin-1 or utf-16."
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, ValueError):  # ValueError: a name holding a NUL
        raise UsageError(f"--encoding {encoding!r} is not an encoding Python knows", hint=hint) from None
    try:
        # str.encode/bytes.decode refuse every codec that is not a text encoding (LookupError, as
        # documented), and "undefined" refuses everything (UnicodeError).
        same = _ASCII_SAMPLE.encode(name).decode(name) == _ASCII_SAMPLE
    except (LookupError, UnicodeError):
        same = False
    if not same or name in _NAME_CODECS:
        raise UsageError(f"--encoding {encoding!r} is not a text encoding", hint=hint)
    return name


def decode(path: Path, raw: bytes, encoding: str | None) -> tuple[str, str]:
    """The text of ``raw`` and the encoding it was read with."""
    if encoding:
        name = check_encoding_name(encoding)
        try:
            text = raw.decode("utf-8-sig" if name == "utf-8" else name)
        except UnicodeDecodeError as exc:
            raise InputFileError(
                path,
                f"is not valid {encoding} text (byte {exc.start} does not fit); "
                "leave out --encoding to let the loader detect it",
            ) from None
        text = text.removeprefix("\ufeff")
        _refuse_binary(path, text, f"does not read as {encoding} text; check --encoding")
        return text, name
    for bom, name in _BOMS:
        if raw.startswith(bom):
            try:
                text = raw.decode(name)
            except UnicodeDecodeError:
                raise InputFileError(
                    path, f"starts like {name.upper()} text but is not valid {name.upper()}; use --encoding"
                ) from None
            text = text.removeprefix("\ufeff")
            _refuse_binary(path, text, "is binary data, not a spreadsheet or a text table")
            return text, name
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        _refuse_binary(path, text, "is binary data, not a spreadsheet or a text table")
        return text, "utf-8"
    if b"\x00" in raw[:_SAMPLE_BYTES]:
        found = _utf16_without_bom(raw)
        if found is None:
            raise InputFileError(path, "is binary data, not a spreadsheet or a text table")
        return found
    text, name = _legacy_encoding(path, raw)
    _refuse_binary(path, text, "is binary data, not a spreadsheet or a text table")
    return text, name


def _utf16_without_bom(raw: bytes) -> tuple[str, str] | None:
    """UTF-16 text whose writer left out the byte-order mark: every other byte of ASCII is NUL."""
    sample = raw[:4096]
    half = max(len(sample) // 2, 1)
    for name, zeros in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if zeros.count(0) >= 0.9 * half:
            try:
                text = raw.decode(name)
            except UnicodeDecodeError:
                return None
            if not _looks_binary(text):
                return text, name
    return None


def _legacy_encoding(path: Path, raw: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    sample = raw[:_SAMPLE_BYTES]
    if len(raw) > _SAMPLE_BYTES and b"\n" in sample:
        sample = sample[: sample.rindex(b"\n") + 1]
    best = from_bytes(sample).best()
    try:
        as_cp1252 = raw.decode("cp1252")
    except UnicodeDecodeError:
        pass
    else:
        cp1252 = from_bytes(sample, cp_isolation=["cp1252"]).best()
        if cp1252 is not None and (best is None or cp1252.chaos <= best.chaos + _CP1252_TOLERANCE):
            return as_cp1252, "cp1252"
    if best is None:
        raise InputFileError(
            path,
            "is not text in any encoding the loader recognises; if it is text, name its encoding "
            "with --encoding (e.g. cp1252)",
        )
    try:
        return raw.decode(best.encoding), best.encoding
    except UnicodeDecodeError:
        raise InputFileError(
            path,
            f"reads as {best.encoding} text at first but not throughout; name its encoding with --encoding",
        ) from None


def _looks_binary(text: str) -> bool:
    sample = text[:_SAMPLE_CHARS]
    if "\x00" in sample:
        return True
    return len(_CONTROL.findall(sample)) > len(sample) / 100


def _refuse_binary(path: Path, text: str, problem: str) -> None:
    if _looks_binary(text):
        raise InputFileError(path, problem)


# --- separators ------------------------------------------------------------------------


def detect_delimiter(text: str, *, suffix: str = ".csv", header_row: int = 1) -> str:
    """The separator that splits the header and the rows below it most consistently.

    For each candidate, the first hundred rows from the header on are split
    with it; the winner gives the header more than one cell and the most
    rows the same number of cells as the header; between two that do equally
    well, the one that leaves no double quote inside a cell (a quoted cell
    cut in two), then the one that gives more columns (a semicolon file
    whose header reads ``Address, City``). Ties after that go to the
    suffix's usual separator (tab for ``.tsv`` and ``.txt``, else comma).
    """
    sample = text[:_SAMPLE_CHARS]
    if len(text) > _SAMPLE_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    order = ("\t", ",", ";", "|") if suffix in (".tsv", ".txt") else DELIMITERS
    best, best_score = order[0], (False, 0.0, 0, 0)
    for delimiter in order:
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter, strict=False)
        try:
            # islice takes no index past sys.maxsize; a header row past it has no rows anyway.
            first = min(header_row - 1, sys.maxsize - 100)
            records = list(itertools.islice(reader, first, first + 100))
        except csv.Error:
            continue
        widths = [w for w in (len(_trimmed(r)) for r in records) if w]
        if not widths:
            continue
        header = widths[0]
        cut_quotes = sum(1 for r in records for cell in r if '"' in cell)
        score = (header > 1, sum(1 for w in widths if w == header) / len(widths), -cut_quotes, header)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _trimmed(row: list[str]) -> list[str]:
    end = len(row)
    while end and not row[end - 1].strip():
        end -= 1
    return row[:end]


# --- parsing ---------------------------------------------------------------------------


def parse(path: Path, text: str, delimiter: str) -> list[list[str]]:
    """Every row of ``text``; row ``i`` of the list is spreadsheet row ``i + 1``."""
    rows: list[list[str]] = []
    old_limit = csv.field_size_limit(MAX_CELL_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', strict=False)
    end_line = 0
    last_start = 1
    try:
        for row in reader:
            last_start = end_line + 1
            rows.append(row)
            end_line = reader.line_num
    except csv.Error as exc:
        row_number, start = len(rows) + 1, end_line + 1
        if "field larger than field limit" not in str(exc):
            raise InputFileError(
                path, f"row {row_number} cannot be read as {DELIMITER_NAMES[delimiter]}-separated text"
            ) from None
        if _quote_left_open(text, start, delimiter):
            raise InputFileError(path, _open_quote(row_number)) from None
        raise InputFileError(
            path,
            f"row {row_number} has a cell longer than {MAX_CELL_CHARS:,} characters, "
            "the most a spreadsheet cell can hold",
        ) from None
    finally:
        csv.field_size_limit(old_limit)
    multiline_end = rows and any("\n" in cell or "\r" in cell for cell in rows[-1])
    if multiline_end and _quote_left_open(text, last_start, delimiter):
        raise InputFileError(path, _open_quote(len(rows)))
    return rows


def _open_quote(row: int) -> str:
    return (
        f'row {row} opens a double quote (") that is never closed, so every line below it would be '
        "read as one cell; close the quote or remove it"
    )


def _quote_left_open(text: str, line: int, delimiter: str) -> bool:
    """Whether the row starting on ``line`` (1-based) runs to the end of ``text`` inside quotes."""
    offset = 0
    if line > 1:
        for count, match in enumerate(_LINE_BREAK.finditer(text), start=2):
            if count == line:
                offset = match.end()
                break
    if text.find('"', offset) == -1:
        return False  # no quote at all from here on: nothing can be left open
    old_limit = csv.field_size_limit(len(text) + 1)
    try:
        reader = csv.reader(io.StringIO(text[offset:], newline=""), delimiter=delimiter, strict=True)
        next(reader, None)
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    finally:
        csv.field_size_limit(old_limit)
    return False


def _check_width(path: Path, rows: list[list[str]]) -> None:
    widest = max(map(len, rows), default=0)
    if widest <= MAX_COLUMNS:
        return
    for number, row in enumerate(rows, start=1):
        if len(row) > MAX_COLUMNS and len(_trimmed(row)) > MAX_COLUMNS:
            raise InputFileError(
                path,
                f"row {number} has {len(_trimmed(row)):,} cells; the loader reads at most "
                f"{MAX_COLUMNS:,} columns, far more than any contacts sheet has",
            )


def ragged_rows(rows: list[list[str]], *, header_row: int, delimiter: str) -> dict[int, str]:
    """What is wrong with each row below the header whose cells do not line up with the headers.

    A row may end early only where the headers end (trailing blank headers
    need no cells), and may run on past the headers only with blank cells
    (a trailing separator). Blank rows are skipped, not reported.
    """
    if len(rows) < header_row:
        return {}
    header = rows[header_row - 1]
    cells = len(header)
    named = len(_trimmed(header))
    sep = DELIMITER_NAMES.get(delimiter, repr(delimiter))
    found: dict[int, str] = {}
    for index in range(header_row, len(rows)):
        row = rows[index]
        if named <= len(row) <= cells:
            continue
        filled = len(_trimmed(row))
        if not filled:
            continue
        if len(row) < named:
            found[index + 1] = (
                f"the row has {_count(len(row), 'cell')} but there are {_count(named, 'column header')}: "
                f"a value or a {sep} is missing, so values may be under the wrong headers; fix the row so "
                "each value is under its header"
            )
        elif filled > cells:
            if any(_SPACED_QUOTE.match(cell) for cell in row):
                fix = (
                    f"a space between a {sep} and a double quote stops the quotes from holding the value "
                    f"together; remove the space after the {sep}"
                )
            else:
                fix = f"a value holding a {sep} needs double quotes around it, or there is a {sep} too many"
            found[index + 1] = (
                f"the row has {_count(filled, 'cell')} but there are only {_count(cells, 'column header')}: "
                + fix
            )
    return found


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


# --- the fast path ---------------------------------------------------------------------

#: Enough of the file's start to hold ``_SAMPLE_CHARS`` characters of UTF-8 and a few more.
_PROBE_BYTES = 4 * _SAMPLE_CHARS + 16
#: pyarrow reads in blocks; a row must fit in one.
_ARROW_BLOCK_BYTES = 16 * 1024 * 1024


def read_with_arrow(path: Path, *, suffix: str, header_row: int) -> TextTable | None:
    """The table read by pyarrow, or ``None`` when only the csv module can read it the same way.

    Taken for UTF-8 text (with or without a byte-order mark) whose rows all
    have as many cells as the first, with no cell longer than
    ``MAX_CELL_CHARS``, no NUL and no quote left open. Everything it looks
    at before parsing is the file's first ``_PROBE_BYTES``, which is all the
    csv path's encoding, binary and separator checks look at too, so both
    paths decide those the same way; anything else gives ``None``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_INPUT_BYTES:
            return None  # the csv path reads up to the limit and refuses the rest
        head = handle.read(_PROBE_BYTES)
        whole = not handle.read(1)
    bom = head.startswith(codecs.BOM_UTF8)
    if not bom and any(head.startswith(mark) for mark, _ in _BOMS):
        return None  # UTF-16 or UTF-32: the csv path decodes it
    offset = len(codecs.BOM_UTF8) if bom else 0
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head[offset:], final=whole)
    except UnicodeDecodeError:
        return None
    if bom and text.startswith("\ufeff"):
        # decode() strips a second mark after a first one; it is 3 bytes in UTF-8.
        text = text[1:]
        offset += len(codecs.BOM_UTF8)
    if not text.strip() or _looks_binary(text):
        return None  # the csv path refuses it, with its own message
    sep_line = _SEP_LINE.match(text)
    if sep_line and sep_line.group(1) in DELIMITERS:
        delimiter = sep_line.group(1)
        offset += sep_line.end()  # "sep=;" and its line break are ASCII: one byte a character
    else:
        delimiter = detect_delimiter(text, suffix=suffix, header_row=header_row)
    try:
        with pa.OSFile(str(path)) as source:
            source.seek(offset)
            table = pacsv.read_csv(
                source,
                read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=_ARROW_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter,
                    quote_char='"',
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=True,
                    ignore_empty_lines=False,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=_all_text(text, delimiter),
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
    except (pa.ArrowException, OSError, ValueError):
        return None  # ragged rows, a quote left open, bad UTF-8 further on: the csv path decides
    if not _same_as_csv_module(table):
        return None
    return TextTable(
        rows=None, encoding="utf-8-sig" if bom else "utf-8", delimiter=delimiter, columns=table.columns
    )


def _all_text(text: str, delimiter: str) -> dict[str, Any]:
    """pyarrow's column types: every column text, however many the first row has."""
    import pyarrow as pa

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        width = len(next(reader, []))
    except csv.Error:
        width = 0
    return {f"f{i}": pa.large_string() for i in range(max(width, 1) + 1)}


def _same_as_csv_module(table: Any) -> bool:
    """Whether the csv module would have read the same cells without an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0 or table.num_columns > MAX_COLUMNS:
        return False
    for column in table.columns:
        if column.type != pa.large_string():
            return False
        # The byte length bounds the character length the csv module limits.
        if (pc.max(pc.binary_length(column)).as_py() or 0) > MAX_CELL_CHARS:
            return False
        if pc.any(pc.match_substring(column, "\x00")).as_py():
            return False  # the csv module refuses a NUL
    # A line break in the last row may be a quote left open, which the csv path reports.
    last = table.slice(table.num_rows - 1)
    return not any(pc.any(pc.match_substring_regex(column, "[\r\n]")).as_py() for column in last.columns)
