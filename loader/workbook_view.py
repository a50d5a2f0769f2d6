"""What a person sees in a workbook that its cell values do not say: hidden rows, and country codes
shown by a number format.

calamine reads every cell's value but not how the sheet shows it. Two things
shown differ from the values in a way that decides who is called:

- Rows a person cannot see: hidden, filtered out by an autofilter (Excel and
  LibreOffice save those as hidden rows), set to zero height, or collapsed in
  an outline. ``.xlsx``/``.xlsm`` keep this on each ``<row>`` of the sheet's
  XML (``hidden``, ``ht="0"``); ``.ods`` on each ``<table:table-row>``
  (``table:visibility`` of ``collapse`` or ``filter``); ``.xls`` in a flag
  of each ROW record, read with xlrd.
- A number cell whose number format shows a ``+`` (``"+44 "0000000000``
  shows 7911123456 as ``+44 7911123456``): the country code is in the format,
  not in the value. ``.xlsx`` keeps formats in ``xl/styles.xml`` and a style
  index on each cell; ``.ods`` writes each cell's shown text beside its value.

Both are read from the workbook's XML with expat, streaming: a sheet's XML is
decompressed a piece at a time and first only searched for the few bytes that
could mark a hidden row or a styled cell, so a sheet with neither (nearly
every sheet) costs one pass of decompression. Only the standard library is
used; the zip was checked by ``loader.zip_checks`` before (no document types,
so no entity expansion). An ``.xls`` file's view is read with xlrd
(``xls_view``); ``.xlsb`` files, rare, are read without a view.
"""

from __future__ import annotations

# The standard library only (xlrd is imported where it is used): the .xls reader's child process
# loads this file on its own, without the loader package (``loader.calamine_reader``).
import contextlib
import io
import posixpath
import re
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DOC_RELS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
#: An ODS number style that writes a plus before the digits, as LibreOffice saves "+44 "0000000000.
_ODS_PLUS_HINTS = (b"<number:text>+",)
#: A number cell repeated across more columns than a sheet has is not a contact's phone.
_MAX_SHOWN_REPEATS = 1024
_CHUNK = 1 << 20
#: Bytes that are there when some row is hidden (or happen to be in a cell's text, which only costs
#: looking at that tag): Excel writes hidden="1", LibreOffice hidden="true" (and hidden="false" on
#: every other row), others ht="0". Plain bytes, not a pattern: searching 50 MB of XML for bytes
#: takes milliseconds, for a pattern a second.
_HIDDEN_HINTS = (
    *(b"hidden=%s%s%s" % (q, v, q) for q in (b'"', b"'") for v in (b"1", b"true")),
    *(b" ht=%s0" % q for q in (b'"', b"'")),
    b"hidden ",  # hidden = "1", spaced as XML allows and no known writer does
    b" ht ",
)
_ZERO_HEIGHT_HINTS = (b'zeroHeight="1"', b'zeroHeight="true"', b"zeroHeight='1'", b"zeroHeight='true'")
_ODS_HIDDEN_HINTS = (b"collapse", b'visibility="filter', b"visibility='filter")
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")
_START_TAG = re.compile(rb"<(?:[\w.-]+:)?([\w.-]+)")
_ATTRIBUTE = re.compile(rb"""([\w.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


@dataclass(frozen=True)
class View:
    """What the sheet shows beyond its values. Rows are spreadsheet rows (from 1), columns from 0."""

    hidden_rows: frozenset[int] = frozenset()
    #: (row, column) -> the number format of a cell whose format shows a ``+`` (a country code).
    formats: dict[tuple[int, int], str] = field(default_factory=dict)
    #: (row, column) -> the text a number cell shows, as the file itself writes it (.ods), where it
    #: holds a ``+`` (a country code).
    shown: dict[tuple[int, int], str] = field(default_factory=dict)


NOTHING = View()


def view_of(path: Path, kind: str, sheet_name: str, height: int) -> View:
    """The view of sheet ``sheet_name`` (``height`` rows) of the workbook at ``path``."""
    if not path.is_file():
        return NOTHING  # a pipe could be read only once, by the reader itself
    if kind == "xls":
        return xls_view(path, sheet_name)
    try:
        with zipfile.ZipFile(path) as archive:
            if kind == "ods":
                return _ods_view(archive, sheet_name, height)
            if kind == "xlsx":
                return _xlsx_view(archive, sheet_name)
    except (zipfile.BadZipFile, KeyError, OSError, ET.ParseError, expat.ExpatError, ValueError):
        # calamine read the sheet, so the file is sound; a part this cannot follow (an unusual
        # writer's layout) leaves the rows as calamine read them, as before views existed.
        return NOTHING
    return NOTHING


class Ahead:
    """The view of the sheet a reader is about to read, worked out in a thread while calamine parses.

    Reading the view is mostly decompressing the sheet's XML (a tenth of a
    second per 100,000 rows), which, like calamine's parse, runs without
    Python's GIL: side by side, it costs no time. The sheet is the one named,
    or numbered, or the first visible worksheet; ``view`` checks it was the one
    read, and works the view out then if not.
    """

    def __init__(self, path: Path, kind: str, sheet: str | int | None) -> None:
        self._path, self._kind = path, kind
        self._name = _likely_sheet(path, sheet) if kind == "xlsx" else None
        self._found: list[View] = []
        self._thread: threading.Thread | None = None
        if self._name is not None:
            self._thread = threading.Thread(target=self._work, args=(self._name,), name="callkaro-view")
            try:
                self._thread.start()
            except RuntimeError:  # no thread to be had: worked out when asked
                self._thread = None

    def _work(self, name: str) -> None:
        with contextlib.suppress(Exception):  # whatever went wrong is met again, and said, when asked
            self._found.append(view_of(self._path, self._kind, name, 0))

    def view(self, name: str, height: int) -> View:
        """The view of sheet ``name`` (``height`` rows), the one the reader read."""
        if self._thread is not None:
            self._thread.join()
            if name == self._name and self._found:
                return self._found[0]
        return view_of(self._path, self._kind, name, height)


def _likely_sheet(path: Path, sheet: str | int | None) -> str | None:
    """The name of the sheet calamine will read for ``sheet``, from the workbook's list; None if unsure."""
    try:
        with zipfile.ZipFile(path) as archive:
            workbook = ET.fromstring(archive.read("xl/workbook.xml"))
            rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (zipfile.BadZipFile, KeyError, OSError, ET.ParseError, ValueError):
        return None
    kinds = {r.get("Id"): r.get("Type", "") for r in rels.iter(f"{_RELS}Relationship")}
    sheets = [s for s in workbook.iter(f"{_MAIN}sheet") if s.get("name")]
    names = [str(s.get("name")) for s in sheets]
    if isinstance(sheet, str) and sheet in names:
        return sheet
    if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.strip().isdigit()):
        index = int(sheet)
        return names[index] if 0 <= index < len(names) else None
    if sheet is None:
        shown = [
            str(s.get("name"))
            for s in sheets
            if s.get("state", "visible") == "visible"
            and kinds.get(s.get(f"{_DOC_RELS}id"), "").endswith("/worksheet")
        ]
        return shown[0] if shown else None
    return None


# --- .xlsx / .xlsm ------------------------------------------------------------------------------


def _xlsx_view(archive: zipfile.ZipFile, sheet_name: str) -> View:
    part = _sheet_part(archive, sheet_name)
    if part is None:
        return NOTHING
    styles = _styles_showing_plus(archive)
    hidden: set[int] = set()
    formats: dict[tuple[int, int], str] = {}
    # Only the tags holding a hint are read: a sheet's XML is a million tags, its hidden rows a few.
    hints = [*_HIDDEN_HINTS, *_ZERO_HEIGHT_HINTS, *(b' s="%d"' % style for style in styles)]
    for tag in _tags_holding(archive, part, hints):
        found = _START_TAG.match(tag)
        if found is None or found[1] not in (b"row", b"c", b"sheetFormatPr"):
            continue
        attrs = {m[1].decode(): (m[2] or m[3]).decode() for m in _ATTRIBUTE.finditer(tag, found.end())}
        if found[1] == b"sheetFormatPr":
            if attrs.get("zeroHeight") in ("1", "true"):
                # Rows are hidden unless a row says its height ("hide all rows below"): read every row.
                return _xlsx_view_parsed(archive, part, styles, hidden_by_default=True)
            continue
        if "r" not in attrs:
            # A writer that leaves out row or cell references (Excel never does): count them all.
            return _xlsx_view_parsed(archive, part, styles)
        if found[1] == b"row":
            if _hides(attrs):
                hidden.add(int(attrs["r"]))
        elif (ref := _CELL_REF.fullmatch(attrs["r"])) and int(attrs.get("s", "-1")) in styles:
            formats[int(ref[2]), _column_index(ref[1])] = styles[int(attrs["s"])]
    return View(hidden_rows=frozenset(hidden), formats=formats)


def _xlsx_view_parsed(
    archive: zipfile.ZipFile, part: str, styles: dict[int, str], *, hidden_by_default: bool = False
) -> View:
    """The view from every row and cell of ``part``, counted where references are left out.

    ``hidden_by_default``: the sheet hides rows that do not give their own height.
    """
    hidden: set[int] = set()
    formats: dict[tuple[int, int], str] = {}
    at = {"row": 0, "column": -1}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(" ")[2]
        if local == "row":
            at["row"] = int(attrs.get("r") or at["row"] + 1)
            at["column"] = -1
            if _hides(attrs) or (hidden_by_default and _zero(attrs.get("ht", "0"))):
                hidden.add(at["row"])
        elif local == "c":
            ref = _CELL_REF.fullmatch(attrs.get("r", ""))
            at["column"] = _column_index(ref[1]) if ref else at["column"] + 1
            style = attrs.get("s")
            if style is not None and int(style) in styles:
                formats[at["row"], at["column"]] = styles[int(style)]

    _parse(archive, part, start)
    return View(hidden_rows=frozenset(hidden), formats=formats)


def _hides(attrs: dict[str, str]) -> bool:
    """Whether a ``<row>`` with ``attrs`` is out of sight: hidden (also how filters and collapsed
    outlines are saved), or zero height."""
    return attrs.get("hidden") in ("1", "true") or _zero(attrs.get("ht"))


def _sheet_part(archive: zipfile.ZipFile, sheet_name: str) -> str | None:
    """The zip path of the sheet named ``sheet_name``, from the workbook and its relationships."""
    workbook = ET.fromstring(archive.read("xl/workbook.xml"))
    relation = next(
        (s.get(f"{_DOC_RELS}id") for s in workbook.iter(f"{_MAIN}sheet") if s.get("name") == sheet_name), None
    )
    if relation is None:
        return None
    rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    target = next(
        (r.get("Target") for r in rels.iter(f"{_RELS}Relationship") if r.get("Id") == relation), None
    )
    if not target:
        return None
    return target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")


def _styles_showing_plus(archive: zipfile.ZipFile) -> dict[int, str]:
    """Cell style index -> number format, for the styles whose format shows a ``+``."""
    try:
        data = archive.read("xl/styles.xml")
    except KeyError:
        return {}
    if b"+" not in data:
        return {}  # the common case: no format writes a plus, and nothing more is read
    styles = ET.fromstring(data)
    codes = {
        int(f.get("numFmtId", "-1")): f.get("formatCode", "")
        for f in styles.iter(f"{_MAIN}numFmt")
        if shows_plus(f.get("formatCode", ""))
    }
    cell_styles = styles.find(f"{_MAIN}cellXfs")
    if not codes or cell_styles is None:
        return {}
    return {
        index: codes[int(xf.get("numFmtId", "0"))]
        for index, xf in enumerate(cell_styles.iter(f"{_MAIN}xf"))
        if int(xf.get("numFmtId", "0")) in codes
    }


def _zero(height: str | None) -> bool:
    try:
        return height is not None and float(height) == 0
    except ValueError:
        return False


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


# --- .ods ---------------------------------------------------------------------------------------


def _ods_view(archive: zipfile.ZipFile, sheet_name: str, height: int) -> View:
    """Rows of table ``sheet_name`` (up to ``height``) whose visibility is ``collapse`` or ``filter``,
    and what number cells show where a number style writes a ``+``."""
    pluses = _any_found(archive, "styles.xml", _ODS_PLUS_HINTS) or _any_found(
        archive, "content.xml", _ODS_PLUS_HINTS
    )
    if not pluses and not _any_found(archive, "content.xml", _ODS_HIDDEN_HINTS):
        return NOTHING
    table = _OdsTable(sheet_name, height, cells=pluses)
    _parse(archive, "content.xml", table.start, table.end, table.text if pluses else None)
    return View(hidden_rows=frozenset(table.hidden), shown=table.shown)


class _OdsTable:
    """Reads one table of an ODS ``content.xml``, element by element (``_parse``'s handlers)."""

    def __init__(self, name: str, height: int, *, cells: bool) -> None:
        self.name, self.height, self.cells = name, height, cells
        self.hidden: set[int] = set()
        self.shown: dict[tuple[int, int], str] = {}
        # Tables entered; the depth of the table read (0: not in it); rows and columns passed.
        self.depth = self.inside = self.row = self.column = 0
        self.rows = range(0)
        #: The number cell being read: its columns, and its text so far (None: not reading one).
        self.columns = range(0)
        self.words: list[str] | None = None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if name == f"{_TABLE} table":
            self.depth += 1
            if not self.inside and attrs.get(f"{_TABLE} name") == self.name:
                self.inside = self.depth
        elif self.inside != self.depth:
            return
        elif name == f"{_TABLE} table-row":
            repeated = int(attrs.get(f"{_TABLE} number-rows-repeated", "1"))
            # A run of rows can be repeated a million times past the data: only the sheet's rows.
            self.rows = range(self.row + 1, min(self.row + repeated, self.height) + 1)
            self.row, self.column = self.row + repeated, 0
            if attrs.get(f"{_TABLE} visibility", "visible") != "visible":
                self.hidden.update(self.rows)
        elif name in (f"{_TABLE} table-cell", f"{_TABLE} covered-table-cell"):
            repeated = int(attrs.get(f"{_TABLE} number-columns-repeated", "1"))
            self.columns = range(self.column, self.column + repeated)
            self.column += repeated
            if (
                self.cells
                and self.rows
                and name.endswith(" table-cell")
                and attrs.get(f"{_OFFICE} value-type") == "float"
            ):
                self.words = []

    def text(self, data: str) -> None:
        if self.words is not None:
            self.words.append(data)

    def end(self, name: str) -> None:
        if name == f"{_TABLE} table":
            if self.inside == self.depth:
                self.inside = 0
            self.depth -= 1
        elif name == f"{_TABLE} table-cell" and self.words is not None:
            shown = "".join(self.words).strip()
            self.words = None
            if "+" in shown and len(self.columns) <= _MAX_SHOWN_REPEATS:
                self.shown.update(((row, column), shown) for row in self.rows for column in self.columns)


# --- .xls (Excel 97-2003) ------------------------------------------------------------------------

#: xlrd's cell types (XL_CELL_TEXT, XL_CELL_NUMBER) whose format is how the value is shown: text, and
#: numbers (formula results too).
_XLS_SHOWN_TYPES = (1, 2)


class XlsUnreadable(Exception):
    """xlrd cannot read which rows of an .xls sheet are hidden, nor how its cells are shown."""


def xls_view(path: Path, sheet_name: str) -> View:
    """The view of sheet ``sheet_name`` of an Excel 97-2003 workbook, read with xlrd: rows saved
    hidden (the ROW record's hidden flag: hidden, filtered out or collapsed alike, or zero height),
    and number and text cells whose format shows a ``+``.

    python-calamine reads the cells' values but tells neither. ``loader.workbooks``
    runs this in the child process that reads the sheet, within a time and
    memory limit (a damaged file can make xlrd ask for gigabytes). A file whose
    view xlrd cannot read raises ``XlsUnreadable``: read without it, rows a
    person hid would be called, and numbers dialled without the country code
    their format shows.
    """
    if not path.is_file():
        return NOTHING  # a pipe could be read only once, by the reader itself
    import xlrd  # only for .xls files: not loaded for every run

    try:
        # xlrd writes its complaints about a file to ``logfile`` (stdout unless told): kept out of
        # sight, as the child's stdout carries its answer.
        with xlrd.open_workbook(
            str(path), formatting_info=True, on_demand=True, ragged_rows=True, logfile=io.StringIO()
        ) as book:
            if sheet_name not in book.sheet_names():
                return NOTHING  # a chart or macro sheet (xlrd reads worksheets only): no rows of contacts
            return _xls_sheet_view(book, book.sheet_by_name(sheet_name))
    except MemoryError:
        raise XlsUnreadable(
            "reading which of its rows are hidden needs more memory than it may use"
        ) from None
    except Exception:  # xlrd has no one error class for a file it cannot follow
        raise XlsUnreadable("which of its rows are hidden cannot be read") from None


def _xls_sheet_view(book: Any, sheet: Any) -> View:
    hidden = frozenset(
        row + 1
        for row, info in sheet.rowinfo_map.items()
        if info.hidden or (info.height == 0 and not info.has_default_height)
    )
    codes = {key: found.format_str or "" for key, found in book.format_map.items()}
    formats = {key: code for key, code in codes.items() if shows_plus(code)}
    styles = {
        index: formats[xf.format_key] for index, xf in enumerate(book.xf_list) if xf.format_key in formats
    }
    shown: dict[tuple[int, int], str] = {}
    if styles:  # nearly every workbook has no such format, and no cell is looked at
        for row in range(sheet.nrows):
            for column, kind in enumerate(sheet.row_types(row)):
                style = sheet.cell_xf_index(row, column)
                if style in styles and kind in _XLS_SHOWN_TYPES:
                    shown[row + 1, column] = styles[style]
    return View(hidden_rows=hidden, formats=shown)


# --- reading a part -----------------------------------------------------------------------------


def _pieces(archive: zipfile.ZipFile, part: str) -> Iterator[bytes]:
    with archive.open(part) as stream:
        while piece := stream.read(_CHUNK):
            yield piece


def _any_found(archive: zipfile.ZipFile, part: str, hints: Sequence[bytes]) -> bool:
    """Whether any of ``hints`` is in ``part``, read a piece at a time (with an overlap, so a hint
    cut in two by a piece's end is still found)."""
    tail = b""
    for piece in _pieces(archive, part):
        window = tail + piece
        if any(hint in window for hint in hints):
            return True
        tail = piece[-32:]
    return False


def _tags_holding(archive: zipfile.ZipFile, part: str, hints: Sequence[bytes]) -> Iterator[bytes]:
    """Each start tag of ``part`` that holds one of ``hints``, once, read a piece at a time.

    XML allows no ``<`` inside a tag, so the text before a piece's last ``<``
    holds only whole tags; what follows it waits for the next piece.
    """
    carry = b""
    for piece in _pieces(archive, part):
        window = carry + piece
        cut = window.rfind(b"<")
        cut = len(window) if cut < 0 else cut
        yield from _tags_in(window[:cut], hints)
        carry = window[cut:]
    yield from _tags_in(carry, hints)


def _tags_in(text: bytes, hints: Sequence[bytes]) -> Iterator[bytes]:
    starts: set[int] = set()
    for hint in hints:
        at = text.find(hint)
        while at >= 0:
            starts.add(text.rfind(b"<", 0, at))
            at = text.find(hint, at + len(hint))
    for start in sorted(starts):
        if start >= 0:
            yield text[start : text.find(b">", start) + 1]


def _parse(
    archive: zipfile.ZipFile,
    part: str,
    start: Callable[[str, dict[str, str]], Any],
    end: Callable[[str], Any] | None = None,
    text: Callable[[str], Any] | None = None,
) -> None:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    if text is not None:
        parser.CharacterDataHandler = text
    parser.buffer_text = True
    for piece in _pieces(archive, part):
        parser.Parse(piece, False)
    parser.Parse(b"", True)


# --- number formats -----------------------------------------------------------------------------

#: One token of a number format: a quoted literal, an escaped character, a bracketed part
#: ([Red], [>100], [$-409]), a spacing or fill pair (_x, *x), an exponent (E+: no plus shown
#: beside the number), or one character.
_TOKEN = re.compile(r'"([^"]*)"|\\(.)|(\[[^\]]*\])|([_*].|[Ee][+-])|(.)', re.DOTALL)
_PLACEHOLDERS = "0#?"
#: Characters a format shows as they are, without quotes.
_PLAIN = set("+-()$:!^&'~{}<>= /") | set("123456789")


def shows_plus(code: str) -> bool:
    """Whether the number format ``code`` shows a ``+`` (a country code) beside the number."""
    return any("+" in literal for literal, _ in _tokens(code) if literal is not None)


def as_shown(value: Any, code: str) -> str | None:
    """``value`` as number format ``code`` shows it, or None when the loader cannot tell exactly.

    Formats of literal text and digit placeholders (``"+44 "0000000000``,
    ``\\+91\\ #``, ``+0``) are shown exactly; anything more (decimals,
    thousands, conditions, several sections for a number) is None, and the
    cell is refused rather than guessed.
    """
    sections = _sections(code)
    if isinstance(value, str):
        text = next((s for s in sections if any(lit is None and t == "@" for lit, t in _tokens(s))), None)
        if text is None:
            return value  # a format without a text section shows text as it is
        return _render(text, lambda token: value if token == "@" else None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value <= 0 or (isinstance(value, float) and not value.is_integer()):
        return None  # not a phone number's digits (and a format's other sections would apply)
    digits = str(int(value))
    places = [t for lit, t in _tokens(sections[0]) if lit is None and t in _PLACEHOLDERS]
    if not places:
        return None
    # Digits fill the placeholders from the right; more digits than places all go in the first.
    filled: list[str] = []
    rest = digits
    for token in reversed(places):
        if rest:
            filled.append(rest[-1])
            rest = rest[:-1]
        else:
            filled.append({"0": "0", "#": "", "?": " "}[token])
    filled.reverse()
    filled[0] = rest + filled[0]
    shown = iter(filled)
    return _render(sections[0], lambda token: next(shown) if token in _PLACEHOLDERS else None)


def _render(section: str, placeholder: Callable[[str], str | None]) -> str | None:
    out: list[str] = []
    for literal, token in _tokens(section):
        if literal is not None:
            out.append(literal)
            continue
        shown = placeholder(token)
        if shown is None:
            return None  # decimals, thousands, a condition...: not a format read exactly
        out.append(shown)
    return "".join(out)


def _sections(code: str) -> list[str]:
    """``code`` split at its unquoted ``;``."""
    sections: list[str] = []
    current: list[str] = []
    for match in _TOKEN.finditer(code):
        if match[5] == ";":
            sections.append("".join(current))
            current = []
        else:
            current.append(match[0])
    sections.append("".join(current))
    return sections


def _tokens(section: str) -> Iterator[tuple[str | None, str]]:
    """(literal text, None-token) for what is shown as written, (None, token) for the rest."""
    for match in _TOKEN.finditer(section):
        quoted, escaped, bracket, pair, char = match.groups()
        if quoted is not None:
            yield quoted, ""
        elif escaped is not None:
            yield escaped, ""
        elif char is not None and char in _PLAIN:
            yield char, ""
        elif (
            bracket is not None and re.fullmatch(r"\[[A-Za-z]+\d*\]", bracket) and "[h" not in bracket.lower()
        ):
            continue  # a colour: changes nothing about the digits
        else:
            yield None, bracket or pair or char or ""
