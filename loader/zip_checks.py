"""The checks a zipped workbook (.xlsx, .xlsm, .xlsb, .ods) passes before any parser sees it.

A zip's directory must not promise a decompression bomb, and no XML part
may declare a document type (the door to entity-expansion and
external-entity attacks); the limits are in ``loader.limits``. Only the
standard library is used, so a workbook can be checked, and parsed early
(``loader.early_read``), before pandas has even been imported.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from loader.errors import InputFileError
from loader.limits import (
    MAX_COMPRESSION_RATIO,
    MAX_UNCOMPRESSED_BYTES,
    MAX_XML_PROLOG_BYTES,
    MAX_ZIP_MEMBERS,
    RATIO_CHECKED_ABOVE_BYTES,
)

_XML_PARTS = (".xml", ".rels", ".vml")
_PROLOG_ITEM = re.compile(r"\s+|\ufeff|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_DAMAGED_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error)


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
