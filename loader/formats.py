"""What a file really is, decided by its content as well as its name.

People rename files: a CSV saved as ``leads.xls``, an ``.xlsx`` that a web
app wrote as a web page, a workbook sent as ``contacts.csv``. ``sniff``
looks at the first bytes (and, for a zip, its directory) and answers with
the kind of file the loader should read, whatever the suffix says, or
raises ``InputFileError`` naming what the file really is when it is not a
table at all (a PDF, a Word document, a zip of something else).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

from loader.errors import InputFileError

Kind = Literal["text", "xlsx", "xlsb", "xls", "ods"]

TEXT_SUFFIXES = {".csv", ".tsv", ".txt"}
SPREADSHEET_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".ods"}
SUPPORTED = ", ".join(sorted(TEXT_SUFFIXES | SPREADSHEET_SUFFIXES))

#: How each kind is named in messages.
KIND_NAMES: dict[str, str] = {
    "text": "a text table (CSV)",
    "xlsx": "an Excel workbook (.xlsx)",
    "xlsb": "an Excel binary workbook (.xlsb)",
    "xls": "an Excel 97-2003 workbook (.xls)",
    "ods": "an OpenDocument spreadsheet (.ods)",
}
#: The kind each suffix promises.
SUFFIX_KINDS: dict[str, Kind] = {
    ".csv": "text",
    ".tsv": "text",
    ".txt": "text",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".ods": "ods",
}
#: Kinds that are zip files: checked by ``loader.zip_checks`` before calamine reads them.
ZIPPED: frozenset[Kind] = frozenset({"xlsx", "xlsb", "ods"})


def by_content(path: Path, kind: Kind) -> bool:
    """Whether ``path`` is a ``kind`` its suffix does not promise, so must be read by its bytes."""
    return SUFFIX_KINDS.get(path.suffix.lower()) != kind


_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SAVE_AS = "open it in Excel or LibreOffice and save it as .xlsx or .csv"
_BINARY_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip-compressed file; unpack it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive; unpack it first"),
    (b"Rar!\x1a\x07", "a RAR archive; unpack it first"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "a program, not data"),
)


def sniff(path: Path) -> Kind:
    """The kind of table ``path`` holds, by content; raise when it holds no table the loader reads."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        if len(head) < 4096:
            raise InputFileError(path, "the file is empty")
        return "text"  # blank lines first; the text reader decides what follows
    if head.startswith(_ZIP):
        return _sniff_zip(path)
    if head.startswith(OLE2):
        return "xls"
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            raise InputFileError(path, f"is {what}, not a spreadsheet or a text table")
    _refuse_markup(path, head)
    return "text"


def _sniff_zip(path: Path) -> Kind:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = {info.filename.lower(): info for info in infos}
            mimetype = names.get("mimetype")
            declared = ""
            if mimetype is not None and mimetype.file_size < 200:
                declared = archive.read(mimetype).decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise InputFileError(path, "is a damaged zip file, not a workbook the loader can read") from None
    except RuntimeError:  # zip-level encryption
        raise InputFileError(path, "is a password-protected zip file; unpack it first") from None
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "xl/workbook.bin" in names:
        return "xlsb"
    if declared == "application/vnd.oasis.opendocument.spreadsheet":
        return "ods"
    if "word/document.xml" in names:
        what = "a Word document (.docx)"
    elif "ppt/presentation.xml" in names:
        what = "a PowerPoint presentation (.pptx)"
    elif declared.startswith("application/vnd.oasis.opendocument."):
        what = f"an OpenDocument {declared.rsplit('.', 1)[-1]} file, not a spreadsheet"
    else:
        shown = ", ".join(info.filename for info in infos[:3]) or "nothing"
        more = f" and {len(infos) - 3} more" if len(infos) > 3 else ""
        what = f"a zip archive (holding {shown}{more})"
    raise InputFileError(path, f"is {what}, not a workbook; unpack or convert it first")


def _refuse_markup(path: Path, head: bytes) -> None:
    """Web pages and XML saved under a spreadsheet name: say what they are and how to convert them."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[2:].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be", "ignore")
    else:
        text = head.decode("latin-1")
    start = text.lstrip("\ufeff\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(("<!doctype html", "<html", "<table", "<meta")) or (
        start.startswith("<?xml") and "<html" in start
    ):
        raise InputFileError(path, f"is a web page (HTML), not a spreadsheet; {_SAVE_AS}")
    if start.startswith("<?xml") or start.startswith("<"):
        if "urn:schemas-microsoft-com:office:spreadsheet" in start:
            what = "an Excel 2003 XML spreadsheet"
        elif "opendocument" in start:
            what = "a flat OpenDocument (XML) file"
        else:
            what = "an XML document"
        if start.startswith("<?xml") or "xmlns" in start:
            raise InputFileError(path, f"is {what}, not a spreadsheet the loader reads; {_SAVE_AS}")
    if start.startswith("{\\rtf"):
        raise InputFileError(path, f"is an RTF document, not a table; {_SAVE_AS}")
