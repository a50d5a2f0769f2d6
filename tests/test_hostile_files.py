"""Broken and hostile files: each is refused with exit 2 and one line naming the file and the problem."""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import openpyxl.xml
import pytest
from openpyxl import Workbook

from loader.cli import main
from loader.limits import MAX_CELL_CHARS, MAX_COLUMNS

PREFIX = "callkaro-loader: error: "
FIXTURES = Path(__file__).parent / "fixtures"


def small_workbook(path: Path) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["phone", "name"])
    sheet.append(["+919876543210", "x"])
    workbook.save(path)
    return path


def rewrite_part(source: Path, target: Path, part: str, change: Callable[[bytes], bytes]) -> Path:
    """Copy a zip, changing one part's bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info, change(data) if info.filename == part else data)
    return target


def with_doctype(doctype: str, entity: str) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        text = data.decode()
        body = text.split("?>", 1)[1] if text.startswith("<?xml") else text
        return (f'<?xml version="1.0"?>\n{doctype}\n' + body.replace(">x<", f">{entity}<")).encode()

    return change


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)
EXTERNAL_ENTITY = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'


def ratio_bomb(path: Path) -> Path:
    """A workbook whose sheet part unpacks from a few KB to 20 MB of spaces."""
    small = small_workbook(path.with_name("small.xlsx"))
    return rewrite_part(
        small, path, "xl/worksheets/sheet1.xml", lambda data: data + b" " * (20 * 1024 * 1024)
    )


def directory_bomb(path: Path) -> Path:
    """A workbook whose zip directory claims each part unpacks to 3 GiB (nothing is ever unpacked)."""
    data = bytearray(small_workbook(path.with_name("small.xlsx")).read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        struct.pack_into("<I", data, at + 24, 3 * 1024**3)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def wide_workbook(path: Path) -> Path:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["phone", *[f"c{i}" for i in range(MAX_COLUMNS + 10)]])
    sheet.append(["+919876543210", *["x"] * (MAX_COLUMNS + 10)])
    workbook.save(path)
    return path


def long_cell_workbook(path: Path) -> Path:
    """A cell longer than Excel allows (openpyxl would cut it, so the sheet's XML is edited)."""
    long_text = b">" + b"y" * (MAX_CELL_CHARS + 1) + b"<"
    small = small_workbook(path.with_name("small.xlsx"))
    return rewrite_part(small, path, "xl/worksheets/sheet1.xml", lambda data: data.replace(b">x<", long_text))


def xls_that_crashes_calamine(path: Path) -> Path:
    """contacts.xls with a few bytes changed: calamine 0.37 asks for 1.5 TB and the process aborts."""
    rnd = random.Random(262)
    data = bytearray((FIXTURES / "contacts.xls").read_bytes())
    for _ in range(rnd.randint(1, 20)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    path.write_bytes(bytes(data))
    return path


def write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def made(name: str, build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    return lambda folder: build(folder / name)


GARBAGE = bytes(range(256)) * 40
CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty csv", write("leads.csv", b""), "the file is empty"),
    ("empty xlsx", write("leads.xlsx", b""), "the file is empty"),
    ("blank lines only", write("leads.csv", b"\r\n \r\n\t\n"), "the file is empty"),
    ("header only", write("leads.csv", b"Name,Phone\r\n"), "has a header row but no data rows below row 1"),
    ("binary garbage csv", write("leads.csv", GARBAGE), "is binary data, not a spreadsheet or a text table"),
    (
        "binary garbage xlsx",
        write("leads.xlsx", GARBAGE),
        "is binary data, not a spreadsheet or a text table",
    ),
    (
        "zip that is not a workbook",
        made("leads.xlsx", lambda p: zip_of(p, {"notes.txt": b"hello", "photo.jpg": b"\xff\xd8"})),
        "is a zip archive (holding notes.txt, photo.jpg), not a workbook; unpack or convert it first",
    ),
    (
        "word document named xlsx",
        made(
            "leads.xlsx", lambda p: zip_of(p, {"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"})
        ),
        "is a Word document (.docx), not a workbook; unpack or convert it first",
    ),
    (
        "truncated workbook",
        made("leads.xlsx", lambda p: p.write_bytes(small_workbook(p).read_bytes()[:1500]) and p),
        "is a damaged zip file, not a workbook the loader can read",
    ),
    (
        "workbook with a broken sheet",
        made(
            "leads.xlsx",
            lambda p: rewrite_part(
                small_workbook(p.with_name("s.xlsx")),
                p,
                "xl/worksheets/sheet1.xml",
                lambda d: d[: len(d) // 2],
            ),
        ),
        "is a damaged workbook the loader cannot read (",
    ),
    (
        "decompression bomb by ratio",
        made("leads.xlsx", ratio_bomb),
        "its part xl/worksheets/sheet1.xml would unpack 1,",
    ),
    (
        "decompression bomb by size",
        made("leads.xlsx", directory_bomb),
        "would unpack to ",
    ),
    (
        "billion laughs",
        made(
            "leads.xlsx",
            lambda p: rewrite_part(
                small_workbook(p.with_name("s.xlsx")),
                p,
                "xl/worksheets/sheet1.xml",
                with_doctype(BILLION_LAUGHS, "&lol3;"),
            ),
        ),
        "its part xl/worksheets/sheet1.xml declares an XML document type, which workbooks never do and XML "
        "entity attacks need; refusing to open it",
    ),
    (
        "external entity",
        made(
            "leads.xlsx",
            lambda p: rewrite_part(
                small_workbook(p.with_name("s.xlsx")),
                p,
                "xl/worksheets/sheet1.xml",
                with_doctype(EXTERNAL_ENTITY, "&xxe;"),
            ),
        ),
        "its part xl/worksheets/sheet1.xml declares an XML document type",
    ),
    (
        "50 MB single cell",
        write("leads.csv", b"phone,notes\n+919876543210," + b"x" * (50 * 1024 * 1024) + b"\n"),
        f"row 2 has a cell longer than {MAX_CELL_CHARS:,} characters, the most a spreadsheet cell can hold",
    ),
    (
        "a quoted cell that never ends, longer than a cell can be",
        write("leads.csv", b'phone,notes\n+919876543210,"' + b"x\n" * (MAX_CELL_CHARS * 10)),
        'row 2 opens a double quote (") that is never closed',
    ),
    (
        "over-long workbook cell",
        made("leads.xlsx", long_cell_workbook),
        f"row 2 has a cell of {MAX_CELL_CHARS + 1:,} characters, more than the {MAX_CELL_CHARS:,}",
    ),
    (
        "10,000 columns",
        write("leads.csv", b",".join([b"phone", *[b"c%d" % i for i in range(10_000)]]) + b"\n+91,1\n"),
        f"row 1 has 10,001 cells; the loader reads at most {MAX_COLUMNS:,} columns",
    ),
    (
        "too many workbook columns",
        made("leads.xlsx", wide_workbook),
        f"sheet 'Sheet' has something in {MAX_COLUMNS + 11:,} columns; the loader reads at most "
        f"{MAX_COLUMNS:,}",
    ),
    (
        "encrypted workbook",
        write(
            "leads.xlsx",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptedPackage".encode("utf-16-le"),
        ),
        "is password-protected; open it, remove the password",
    ),
    (
        "pdf named csv",
        write("leads.csv", b"%PDF-1.4\n"),
        "is a PDF document, not a spreadsheet or a text table",
    ),
    (
        "xls that crashes the parser",
        made("leads.xls", xls_that_crashes_calamine),
        "is a damaged workbook the loader cannot read (the reader crashed on it)",
    ),
    (
        "garbage named xls",
        write("leads.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + GARBAGE),
        "is a damaged workbook",
    ),
]


@pytest.mark.parametrize(("build", "problem"), [(b, p) for _, b, p in CASES], ids=[c[0] for c in CASES])
def test_a_hostile_or_broken_file_exits_2_with_one_line_naming_it(
    tmp_path: Path, capsys: Any, build: Callable[[Path], Path], problem: str
) -> None:
    path = build(tmp_path)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{PREFIX}{path}: {problem}"), lines[0]


def test_the_external_entity_is_never_read(tmp_path: Path, capsys: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    attack = with_doctype(f'<!DOCTYPE foo [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>', "&xxe;")
    path = rewrite_part(
        small_workbook(tmp_path / "s.xlsx"), tmp_path / "leads.xlsx", "xl/worksheets/sheet1.xml", attack
    )
    assert main(["validate", str(path)]) == 2
    assert "TOP-SECRET-VALUE" not in str(capsys.readouterr())


def test_openpyxl_parses_with_defusedxml_and_refuses_entities(tmp_path: Path) -> None:
    # The report and template are written with openpyxl; it must never expand entities either.
    assert openpyxl.xml.DEFUSEDXML is True
    path = rewrite_part(
        small_workbook(tmp_path / "s.xlsx"),
        tmp_path / "lol.xlsx",
        "xl/worksheets/sheet1.xml",
        with_doctype(BILLION_LAUGHS, "&lol3;"),
    )
    with pytest.raises(Exception) as caught:
        openpyxl.load_workbook(io.BytesIO(path.read_bytes()))
    chain = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert any("Entities" in type(e).__name__ or "entit" in str(e).lower() for e in chain if e), chain


def test_a_normal_workbook_passes_the_zip_checks(tmp_path: Path) -> None:
    assert main(["validate", str(small_workbook(tmp_path / "leads.xlsx"))]) == 0


def test_the_zip_checks_do_not_unpack_the_bomb(tmp_path: Path) -> None:
    # The directory bomb claims 3 GiB per part; refusing it must not take memory or time.
    from loader.workbooks import check_zip

    path = directory_bomb(tmp_path / "leads.xlsx")
    with pytest.raises(Exception, match="would unpack to"):
        check_zip(path)
    assert io.BytesIO(path.read_bytes()).getbuffer().nbytes < 10_000
