"""The column-wise phone path gives exactly what phonenumbers.parse + is_valid_number + E.164 give."""

from __future__ import annotations

import ast
import datetime as dt
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader import phones
from loader.cells import distinct_cells, is_blank
from loader.read import read_sheet

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "sample_data"
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
#: Default regions the comparison runs under: none, and countries whose numbering plans differ
#: in every way parsing cares about (shared calling codes, trunk prefixes, transform rules, 011).
DEFAULT_REGIONS = [None, "IN", "US", "CA", "GB", "DE", "IT", "AR", "MX", "BR", "RU", "KZ", "AU", "JP", "NG"]
TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.VOIP,
]
_PHONE_LIKE = re.compile(r"^[\d\s()+\-./eE,;]*\d{3}[\d\s()+\-./eE,;a-z]*$")


def reference(cells: list[Any], region: str | None) -> list[tuple[Any, str | None]]:
    """What ``parse_column`` gave before the fast path: blanks are (None, None), the rest parse_phone."""
    return [(None, None) if is_blank(c) else phones.parse_phone(c, region) for c in cells]


def as_lists(found: tuple[Any, Any]) -> tuple[list[str | None], list[str | None]]:
    """``parse_phone_column``'s answer as two lists, a missing number as None."""
    values, problems = found
    return [None if pd.isna(v) else v for v in values], list(problems)


def column(cells: list[Any], region: str | None, dtype: Any = object) -> list[tuple[Any, str | None]]:
    values, problems = as_lists(phones.parse_phone_column(pd.Series(cells, dtype=dtype), region))
    return list(zip(values, problems, strict=True))


def assert_same(cells: list[Any], regions: list[str | None]) -> None:
    """Both column paths (cells as Python objects, and text cells as a compact text column, as
    a CSV is read) against the reference."""
    texts = [c for c in cells if isinstance(c, str)]
    for region in regions:
        for some, dtype in ((cells, object), (texts, "str")):
            expected = reference(some, region)
            got = column(some, region, dtype)
            different = [(c, e, g) for c, e, g in zip(some, expected, got, strict=True) if e != g]
            assert not different, f"default region {region}, {dtype} column: {different[:5]}"


def _fixture_cells() -> list[Any]:
    """Every phone-like string literal in the test suite, and every cell of the sample sheets."""
    cells: list[Any] = []
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Constant):
                continue
            value = node.value
            if isinstance(value, int | float) or isinstance(value, str) and _PHONE_LIKE.match(value):
                cells.append(value)
    for name in ("contacts.csv", "contacts.xlsx"):
        sheet = read_sheet(SAMPLES / name)
        cells.extend(sheet.cells.to_numpy().ravel().tolist())
    return cells


def _examples() -> list[str]:
    """Each region's example numbers of several types, as people write them."""
    written = []
    for region in REGIONS:
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            nsn = phonenumbers.national_significant_number(number)
            code = str(number.country_code)
            written += [
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
                code + nsn,
                "00" + code + nsn,
                "+" + code + "0" + nsn,
                "0" + nsn,
                nsn,
            ]
    return written


EXAMPLES = _examples()


def test_every_phone_in_the_test_fixtures_gets_the_same_answer_from_both_paths() -> None:
    cells = _fixture_cells() + [
        "",
        "   ",
        True,
        False,
        0.0,
        -919876543210.0,
        9876543210.5,
        float("nan"),
        dt.date(2030, 5, 28),
        dt.datetime(2030, 5, 28, 9, 30),
        "+91\u00a098765 43210",
        "+91\t98765 43210",
        "\u0969\u0967 98765 43210",  # Devanagari digits
        "++91 98765 43210",
        "+ 91 98765 43210",
        "(0) 98765 43210",
        "12",
        "+12",
        "+0 98765 43210",
        "011 44 20 7946 0958",
        "1" * 251,
    ]
    assert len(cells) > 100
    assert_same(cells, DEFAULT_REGIONS)


def test_example_numbers_of_every_region_written_every_way_get_the_same_answer() -> None:
    assert_same(EXAMPLES, DEFAULT_REGIONS)


def test_numbers_decided_in_slices_side_by_side_get_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A large column is decided in slices, in threads: small slices here, so every example is.
    monkeypatch.setattr(phones, "_SLICE_ROWS", 7)
    monkeypatch.setattr(phones, "_MIN_THREAD_ROWS", 3)
    monkeypatch.setattr(phones, "_THREADS", 2)
    threads: set[str] = set()
    real = phones._decide_slice

    def watched(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(phones, "_decide_slice", watched)
    assert_same(EXAMPLES, DEFAULT_REGIONS)
    assert len(threads) == 2 and all(name.startswith("callkaro-phones") for name in threads)


def _write(digits: str, separators: list[str]) -> str:
    """``digits`` with a separator (maybe none) after each digit, from ``separators`` in turn."""
    out = []
    for i, digit in enumerate(digits):
        out.append(digit)
        if i < len(digits) - 1:
            out.append(separators[i % len(separators)])
    return "".join(out)


@st.composite
def written_numbers(draw: st.DrawFn) -> str:
    """A number as a person might type it: a real or mutated number, any prefix, any separators."""
    if draw(st.booleans()):
        number = draw(st.sampled_from(EXAMPLES))
        digits = re.sub(r"\D", "", number)
        prefix = "+" if number.startswith("+") else ""
    else:
        digits = draw(st.text(alphabet="0123456789", min_size=1, max_size=19))
        prefix = ""
    mutation = draw(st.sampled_from(["none", "replace", "insert", "delete"]))
    if digits and mutation != "none":
        where = draw(st.integers(0, len(digits) - 1))
        new = draw(st.sampled_from("0123456789"))
        digits = {
            "replace": digits[:where] + new + digits[where + 1 :],
            "insert": digits[:where] + new + digits[where:],
            "delete": digits[:where] + digits[where + 1 :],
        }[mutation]
    prefix = draw(st.sampled_from([prefix, "+", "00", "0", "", "(+", "+ "]))
    separators = draw(st.lists(st.sampled_from(["", "", " ", "-", ".", "/", "(", ")", ") "]), min_size=1))
    edge = draw(st.sampled_from(["", "", " ", "-", ")"]))
    return edge + prefix + _write(digits, separators) + edge


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(written_numbers(), min_size=1, max_size=8),
    region=st.sampled_from([None, *REGIONS]),
)
def test_generated_numbers_in_any_region_get_the_same_answer_from_both_paths(
    cells: list[str], region: str | None
) -> None:
    assert_same(cells, [region])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789 +-()./eE,", max_size=20), min_size=1, max_size=8))
def test_any_text_of_phone_characters_gets_the_same_answer_from_both_paths(cells: list[str]) -> None:
    assert_same(cells, [None, "IN", "US"])


@pytest.mark.parametrize(
    ("international", "digits", "region", "expected"),
    [
        (True, "919876543210", None, ("+919876543210", None)),
        (False, "9876543210", "IN", ("+919876543210", None)),
        (False, "09876543210", "IN", ("+919876543210", None)),
        (False, "919876543210", "IN", ("+919876543210", None)),
        (True, "14155552671", "IN", ("+14155552671", None)),
        (True, "4402079460958", None, ("+442079460958", None)),
        (
            True,
            "9112345",
            "IN",
            (None, "is not a valid phone number for IN: too short (a valid one looks like +91 81234 56789)"),
        ),
        (
            True,
            "15550100",
            None,
            (None, "is not a valid phone number for US: too short (a valid one looks like +1 201-555-0123)"),
        ),
    ],
)
def test_common_numbers_are_decided_without_phonenumbers_parse(
    international: bool, digits: str, region: str | None, expected: tuple[Any, Any]
) -> None:
    # The fast path must really decide these, or the column path would only be the slow one.
    assert phones.decide(international, digits, region) == expected


def test_a_column_of_ordinary_numbers_never_falls_back_to_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = phones.parse_phone

    def counting(cell: Any, region: str | None) -> Any:
        calls.append(cell)
        return real(cell, region)

    def one_by_one(international: bool, digits: str, region: str | None) -> Any:
        calls.append(digits)
        return None

    monkeypatch.setattr(phones, "parse_phone", counting)
    monkeypatch.setattr(phones, "decide", one_by_one)
    # International, national, and national with the calling code but no plus (an Excel number).
    cells = [f"+91 98{i:08d}" for i in range(200)] + [f"98{i:08d}" for i in range(200)] + ["", "12345"]
    cells += [919800000000 + i for i in range(50)] + [f"+33 1 23 45 67 {i:02d}" for i in range(20)]
    values, problems = as_lists(phones.parse_phone_column(pd.Series(cells, dtype=object), "IN"))
    assert calls == []
    assert values[-70:-20] == [f"+9198000000{i:02d}" for i in range(50)]
    assert values[0] == "+919800000000" and values[200] == "+919800000000"
    assert problems[401] == "is not a valid phone number for IN"
    assert values[400] is None and problems[400] is None
    assert values[-1] == "+33123456719"


def test_each_distinct_number_is_decided_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real = phones._decide_many

    def counting(keys: Any, region: str | None) -> Any:
        seen.append(keys.to_pylist())
        return real(keys, region)

    monkeypatch.setattr(phones, "_decide_many", counting)
    # Written three ways, one number; and one cell repeated on many rows.
    cells = ["+91 98765 43210", "+91-98765-43210", "0091 98765 43210"] + ["+91 91234 56789"] * 50
    for dtype in (object, "str"):
        seen.clear()
        values, _ = as_lists(phones.parse_phone_column(pd.Series(cells, dtype=dtype), "IN"))
        assert seen == [["+919876543210", "+919123456789"]]
        assert values == ["+919876543210"] * 3 + ["+919123456789"] * 50


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=written_numbers(), region=st.sampled_from([None, *REGIONS]))
def test_the_one_by_one_decision_agrees_with_the_reference_whenever_it_decides(
    cell: str, region: str | None
) -> None:
    # What the vectorised path leaves over (shared calling codes, national prefixes) is decided here.
    text = cell.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not re.fullmatch(r"[ ().\-/]*\+?[0-9 ().\-/]*", text) or len(re.sub(r"\D", "", text)) < 3:
        return
    digits = re.sub(r"\D", "", text)
    answer = phones.decide("+" in text, digits, region)
    if answer is not None:
        assert answer == phones.parse_phone(cell, region)


@pytest.mark.parametrize("whole", [True, False])
def test_a_pattern_re2_cannot_run_is_matched_with_python_re_instead(whole: bool) -> None:
    import pyarrow as pa

    values = pa.array(["123", "456", "1"])
    # A look-ahead: RE2 refuses it, Python's re matches it.
    assert phones._regex(values, r"(?=1)\d{3}", whole=whole).tolist() == [True, False, False]
    assert phones._regex(values, r"1|45", whole=whole).tolist() == [not whole, not whole, True]


def test_distinct_cells_keep_one_two_and_true_apart_and_map_every_cell_back() -> None:
    cells: list[Any] = [
        "1",
        1,
        1.0,
        True,
        "1",
        1,
        2.5,
        float("nan"),
        None,
        dt.date(2030, 1, 2),
        dt.date(2030, 1, 2),
    ]
    codes, distinct = distinct_cells(cells)
    back = [distinct[c] for c in codes.tolist()]
    assert [type(v) for v in back] == [type(v) for v in cells]
    assert [v for v in back if v == v] == [v for v in cells if v == v]  # NaN aside
    assert len(distinct) == 8


_IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
#: Cells as workbooks give them (and a few a hand-made Sheet could hold), with many equal across types.
_MIXED_CELLS = st.one_of(
    st.sampled_from(["", " ", "1", "1.0", "True", "a", "\U0001d7d7"]),
    st.integers(-2, 2),
    st.sampled_from([2**63 - 1, 2**63, 2**70, -(2**70)]),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, float("inf"), 2.0**70]),
    st.builds(float, st.just("nan")),  # a new NaN object each time
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            dt.datetime(2030, 1, 2),
            dt.datetime(2030, 1, 2, 9, 30),
            dt.datetime(2030, 1, 2, 4, 0, tzinfo=dt.UTC),
            dt.datetime(2030, 1, 2, 9, 30, tzinfo=_IST),  # the same moment as the one above
            dt.date(2030, 1, 2),
            dt.time(9, 30),
            dt.time(0),
            dt.timedelta(0),
            dt.timedelta(hours=9, minutes=30),
        ]
    ),
    st.sampled_from([Decimal("1"), Decimal("1.0"), Decimal("-0"), b"1", b""]),
    st.sampled_from([np.int64(1), np.float64(1.0), np.float64(-0.0), np.bool_(True)]),
)


def _same_cell(a: Any, b: Any) -> bool:
    """The rule: one distinct value per exact type and value; NaN is one value, 1, 1.0, True and "1" four."""
    if type(a) is not type(b):
        return False
    if type(a) is float and a != a:
        return b != b
    return bool(a == b)


@settings(max_examples=150, deadline=None)
@given(st.lists(_MIXED_CELLS, max_size=40), st.booleans())
def test_distinct_cells_follow_the_one_value_per_type_and_value_rule(
    cells: list[Any], as_array: bool
) -> None:
    values: Any = cells
    if as_array:  # as the loader passes a column: to_numpy of a Series over its cells, a read-only view
        held = np.empty(len(cells), dtype=object)
        held[:] = cells
        values = pd.Series(held, dtype=object, copy=False).to_numpy(dtype=object)
        assert not values.flags.writeable
    codes, distinct = distinct_cells(values)
    assert len(codes) == len(cells)
    for cell, code in zip(cells, codes.tolist(), strict=True):
        assert _same_cell(distinct[code], cell), (cell, distinct[code])
    assert sorted(set(codes.tolist())) == list(range(len(distinct)))
    classes: list[Any] = []
    for cell in cells:
        if not any(_same_cell(cell, seen) for seen in classes):
            classes.append(cell)
    assert len(distinct) == len(classes)


@pytest.mark.parametrize("region", ["IN", "IT", "GB", "US", "DE", "AU"])
def test_number_cells_that_lost_a_leading_zero_get_the_same_answer_column_wise(region: str) -> None:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.FIXED_LINE)
    mobile = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = [
        phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL) for n in (example, mobile) if n
    ]
    digits = ["".join(ch for ch in text if ch.isdigit()) for text in national]
    cells: list[Any] = [int(d) for d in digits if d.strip("0")]
    cells += [float(d.lstrip("0")) for d in digits if d.strip("0")]
    cells += [12345, 919876543210, 3912345678]
    column = as_lists(phones.parse_phone_column(pd.Series(cells, dtype=object), region))
    reference = [phones.parse_phone(cell, region) for cell in cells]
    assert list(zip(*column, strict=True)) == reference
