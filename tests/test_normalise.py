"""Stage 3a: each call-field cell becomes the value the API expects, or a problem a person can fix."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pandas as pd
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.errors import UsageError
from loader.normalise import (
    Context,
    metadata_value,
    parse_bool,
    parse_column,
    parse_gap,
    parse_phone,
    parse_schedule_at,
    parse_time_of_day,
    parse_whole_number,
)
from loader.pipeline import resolve_timezone

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
#: A fixed "now": 2030-01-01 05:30 in Kolkata. No test reads the real clock.
NOW = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)
INDIA = Context(default_region="IN", timezone=KOLKATA, now=NOW)
NO_REGION = Context(default_region=None, timezone=KOLKATA, now=NOW)
PAST_OK = Context(default_region="IN", timezone=KOLKATA, now=NOW, allow_past=True)

E164 = re.compile(r"^\+[1-9]\d{6,14}$", re.ASCII)
HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$", re.ASCII)

MANGLED = (
    "was mangled by a spreadsheet into scientific notation, so its digits are lost; "
    "format the column as text and type the number again"
)
NO_COUNTRY_CODE = "has no country code; write it as +<country code><number> or use --default-region"
NOT_PHONE_CHARS = "is not a phone number (only digits, spaces, +, -, brackets and dots are allowed)"
NOT_DATETIME = "is not a date and time; write it as 2030-05-28 09:30"
DATE_ONLY = "is a date without a time; add the time, e.g. 2030-05-28 09:30"
PAST = "is in the past; use a later time or --allow-past"
NOT_TIME = "is not a time of day; write it as HH:MM, e.g. 08:30 or 8:30 PM"
NOT_BOOL = "is not yes or no; write true/false, yes/no, y/n or 1/0"
NOT_WHOLE = "is not a whole number"
NOT_GAP = "is not whole minutes; write one number (30) or several (30,120)"


# --- to_number -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        "+919876543210",
        "+91 98765 43210",
        " +91 98765 43210 ",
        "+91-98765-43210",
        "+91 (98765) 43210",
        "(+91) 98765-43210",
        "+91.98765.43210",
        "0091 98765 43210",
        "00919876543210",
    ],
)
def test_international_phone_written_any_common_way_becomes_e164(cell: str) -> None:
    assert parse_phone(cell, NO_REGION) == ("+919876543210", None)


@pytest.mark.parametrize("cell", ["98765 43210", "098765-43210", "9876543210", "919876543210"])
def test_national_phone_needs_the_default_region(cell: str) -> None:
    assert parse_phone(cell, INDIA) == ("+919876543210", None)
    assert parse_phone(cell, NO_REGION) == (None, NO_COUNTRY_CODE)


@pytest.mark.parametrize("cell", [919876543210.0, 919876543210])
def test_excel_phone_stored_as_number_keeps_its_digits(cell: float | int) -> None:
    assert parse_phone(cell, INDIA) == ("+919876543210", None)


def test_number_from_another_country_is_kept_when_it_has_its_country_code() -> None:
    assert parse_phone("+1 (415) 555-2671", INDIA) == ("+14155552671", None)
    assert parse_phone("+44 20 7946 0958", INDIA) == ("+442079460958", None)


@pytest.mark.parametrize("cell", ["9.19877E+11", "9.19877e+11", "9,19877E+11", "9.19877E11", "1e5"])
def test_phone_mangled_into_scientific_notation_is_rejected(cell: str) -> None:
    assert parse_phone(cell, INDIA) == (None, MANGLED)


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        (
            "+91 12345",
            "is not a valid phone number for IN: too short (a valid one looks like +91 81234 56789)",
        ),
        ("12345", "is not a valid phone number for IN"),
        (
            "+1 555 0100",
            "is not a valid phone number for US: too short (a valid one looks like +1 201-555-0123)",
        ),
        ("+999 1234567", "has a country code that does not exist"),
        ("call me", NOT_PHONE_CHARS),
        ("+91 98765 43210 ext 5", NOT_PHONE_CHARS),
        ("+919876543210; +919876543211", NOT_PHONE_CHARS),
        ("+", "is not a phone number"),
        (True, "is not a phone number"),
        (9876543210.5, "is not a phone number"),
        (-919876543210.0, "is not a phone number"),
        (dt.date(2030, 5, 28), "is not a phone number"),
    ],
)
def test_invalid_phone_is_rejected_with_the_reason(cell: Any, problem: str) -> None:
    assert parse_phone(cell, INDIA) == (None, problem)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789 +-()./eE,")))
def test_any_text_in_the_phone_column_gives_e164_or_a_problem(text: str) -> None:
    for ctx in (INDIA, NO_REGION):
        value, problem = parse_phone(text, ctx)
        if problem is None:
            assert isinstance(value, str) and E164.match(value)
        else:
            assert value is None and isinstance(problem, str) and problem


def _example_numbers() -> list[str]:
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is not None:
            numbers.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return numbers


@settings(max_examples=200, deadline=None)
@given(
    number=st.sampled_from(_example_numbers()),
    prefix=st.sampled_from(["+", "00", "+ "]),
    separators=st.lists(st.sampled_from(["", "", " ", "-", "  "]), min_size=16, max_size=16),
)
def test_valid_number_with_any_spaces_and_dashes_gives_the_same_e164(
    number: str, prefix: str, separators: list[str]
) -> None:
    digits = number[1:]
    written = prefix + "".join(d + s for d, s in zip(digits, separators, strict=False)).strip(" -")
    assert parse_phone(written, NO_REGION) == (number, None)


# --- schedule_at ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        "2030-05-28T09:30:00",
        "2030-05-28 09:30",
        "2030-05-28T09:30",
        "2030-05-28 09:30:00",
        " 2030-05-28 09:30 ",
        "2030-05-28T09:30:00.750",
        dt.datetime(2030, 5, 28, 9, 30),
        dt.datetime(2030, 5, 28, 9, 30, 0, 999999),
    ],
)
def test_schedule_at_iso_text_or_excel_datetime_is_sent_as_local_seconds(cell: Any) -> None:
    assert parse_schedule_at(cell, INDIA) == ("2030-05-28T09:30:00", None)


@pytest.mark.parametrize(
    ("cell", "sent"),
    [("0999-01-01 09:00", "0999-01-01T09:00:00"), ("0001-01-01 00:00", "0001-01-01T00:00:00")],
)
def test_schedule_at_before_the_year_1000_is_sent_with_four_year_digits(cell: str, sent: str) -> None:
    # strftime wrote "999-01-01T09:00:00", which the schema refused with its own regex as the message.
    assert parse_schedule_at(cell, PAST_OK) == (sent, None)


@pytest.mark.parametrize(
    "cell",
    [
        "2030-05-28T04:00:00+00:00",
        "2030-05-28T04:00:00Z",
        "2030-05-28 04:00z",
        "2030-05-28T09:30:00+05:30",
        "2030-05-27T23:00:00-05:00",
        dt.datetime(2030, 5, 28, 4, 0, tzinfo=dt.UTC),
    ],
)
def test_schedule_at_with_an_offset_is_converted_to_the_run_timezone(cell: Any) -> None:
    assert parse_schedule_at(cell, INDIA) == ("2030-05-28T09:30:00", None)


def test_schedule_at_offset_is_converted_to_whichever_timezone_the_run_uses() -> None:
    new_york = Context(default_region="US", timezone=zoneinfo.ZoneInfo("America/New_York"), now=NOW)
    assert parse_schedule_at("2030-05-28T13:30:00Z", new_york) == ("2030-05-28T09:30:00", None)


@pytest.fixture
def machine_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's own zone is America/New_York (the TZ variable), whatever the real machine's is."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_in_new_york")
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2030-01-15T14:30:00Z", "2030-01-15T09:30:00"),  # EST, UTC-5
        ("2030-07-15T13:30:00Z", "2030-07-15T09:30:00"),  # EDT, UTC-4
        ("2030-07-15T14:30:00+01:00", "2030-07-15T09:30:00"),
    ],
)
def test_schedule_at_offset_without_timezone_uses_the_machines_daylight_saving_rules_on_that_day(
    cell: str, expected: str
) -> None:
    # No --timezone: the machine's zone, with the offset it has on the row's day, not on the day of the run.
    machine = Context(default_region="US", timezone=resolve_timezone(None), now=NOW)
    assert parse_schedule_at(cell, machine) == (expected, None)


@pytest.mark.parametrize("name", ["", "  "])
def test_a_blank_timezone_is_refused_rather_than_taken_as_the_machines(name: str) -> None:
    # e.g. --timezone "$ZONE" with ZONE unset: the run must not judge and convert times in another zone.
    with pytest.raises(UsageError) as caught:
        resolve_timezone(name)
    assert str(caught.value) == f"--timezone {name!r} is not an IANA time zone"


@pytest.mark.parametrize("cell", ["2030-05-28", "2030-5-8", dt.date(2030, 5, 28)])
def test_schedule_at_date_without_a_time_is_rejected(cell: Any) -> None:
    assert parse_schedule_at(cell, INDIA) == (None, DATE_ONLY)


@pytest.mark.parametrize(
    "cell",
    ["28/05/2030 09:30", "tomorrow 9am", "2030-05-28 25:00", "2030-13-01 09:30", "09:30", 47631.4, True],
)
def test_schedule_at_that_is_not_a_date_and_time_is_rejected(cell: Any) -> None:
    assert parse_schedule_at(cell, INDIA) == (None, NOT_DATETIME)


@pytest.mark.parametrize(
    "cell", ["2029-12-31 09:00", "2030-01-01 05:29", "2029-12-31T23:59:00Z", dt.datetime(2020, 1, 1, 9, 0)]
)
def test_schedule_at_in_the_past_is_rejected_unless_allow_past(cell: Any) -> None:
    assert parse_schedule_at(cell, INDIA) == (None, PAST)
    value, problem = parse_schedule_at(cell, PAST_OK)
    assert problem is None and re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$", value)


def test_schedule_at_is_past_by_the_run_timezone_not_utc() -> None:
    # Now is 05:30 in Kolkata (00:00 UTC): 05:30 local is not past, 05:29 is.
    assert parse_schedule_at("2030-01-01 05:30", INDIA) == ("2030-01-01T05:30:00", None)
    assert parse_schedule_at("2030-01-01 05:29", INDIA) == (None, PAST)


@pytest.mark.parametrize(
    ("now", "cell", "expected"),
    [
        # 06:10 UTC is 01:10 EST, after the clocks went back: 05:50 UTC (01:50 EDT) is 20 minutes ago.
        (dt.datetime(2030, 11, 3, 6, 10, tzinfo=dt.UTC), "2030-11-03T05:50:00Z", (None, PAST)),
        # 05:45 UTC is 01:45 EDT, before the clocks go back: 06:15 UTC (01:15 EST) is 30 minutes ahead.
        (
            dt.datetime(2030, 11, 3, 5, 45, tzinfo=dt.UTC),
            "2030-11-03T06:15:00Z",
            ("2030-11-03T01:15:00", None),
        ),
    ],
)
def test_schedule_at_with_an_offset_is_past_by_the_instant_in_the_hour_the_clocks_go_back(
    now: dt.datetime, cell: str, expected: tuple[str | None, str | None]
) -> None:
    new_york = Context(default_region="US", timezone=zoneinfo.ZoneInfo("America/New_York"), now=now)
    assert parse_schedule_at(cell, new_york) == expected


# --- min_trigger_time / max_trigger_time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("08:30", "08:30"),
        ("8:30", "08:30"),
        (" 8:30 ", "08:30"),
        ("08:30:45", "08:30"),
        ("23:59", "23:59"),
        ("00:00", "00:00"),
        ("8:30 PM", "20:30"),
        ("8:30 pm", "20:30"),
        ("8:30PM", "20:30"),
        ("8:30 p.m.", "20:30"),
        ("8:30 AM", "08:30"),
        ("8 PM", "20:00"),
        ("8pm", "20:00"),
        ("12 AM", "00:00"),
        ("12:00 AM", "00:00"),
        ("12:30 AM", "00:30"),
        ("12 PM", "12:00"),
        ("12:30 PM", "12:30"),
        ("11:59 PM", "23:59"),
        (dt.time(8, 30), "08:30"),
        (dt.time(20, 30, 59), "20:30"),
        (dt.datetime(1899, 12, 30, 8, 30), "08:30"),
        (dt.timedelta(hours=8, minutes=30), "08:30"),
        (0.5, "12:00"),
        (0.0, "00:00"),
        (8.5 / 24, "08:30"),
        (20.5 / 24, "20:30"),
    ],
)
def test_time_of_day_written_any_accepted_way_is_sent_as_hh_mm(cell: Any, expected: str) -> None:
    assert parse_time_of_day(cell, INDIA) == (expected, None)


@pytest.mark.parametrize(
    "cell",
    [
        "9",
        "24:00",
        "09:60",
        "9:30:60",
        "8:5",
        "8.30",
        "0:30 AM",
        "13:00 PM",
        "0 PM",
        "noon",
        "",
        "8:30 XM",
        1.0,
        1.5,
        -0.25,
        True,
        dt.timedelta(days=1),
        dt.timedelta(hours=-1),
    ],
)
def test_time_of_day_that_is_not_one_is_rejected(cell: Any) -> None:
    assert parse_time_of_day(cell, INDIA) == (None, NOT_TIME)


def test_excel_date_and_time_in_a_time_column_is_rejected() -> None:
    assert parse_time_of_day(dt.datetime(2030, 5, 28, 8, 30), INDIA) == (
        None,
        "is a date and time, not a time of day; write it as HH:MM",
    )


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.from_regex(r"\A\s?\d{1,3}(:\d{1,3}(:\d{1,3})?)?\s?([aApP]\.?[mM]?\.?)?\s?\Z"),
        st.floats(allow_nan=True, allow_infinity=True),
    )
)
def test_any_cell_in_a_time_column_gives_hh_mm_or_a_problem(cell: Any) -> None:
    value, problem = parse_time_of_day(cell, INDIA)
    if problem is None:
        assert isinstance(value, str) and HH_MM.match(value)
    else:
        assert value is None and problem


# --- carry_over ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        *[
            (c, True)
            for c in ["true", "TRUE", "True", "yes", "Yes", "YES", "y", "Y", "1", " yes ", True, 1, 1.0]
        ],
        *[(c, False) for c in ["false", "FALSE", "False", "no", "No", "NO", "n", "N", "0", False, 0, 0.0]],
    ],
)
def test_carry_over_accepts_every_documented_yes_and_no(cell: Any, expected: bool) -> None:
    value, problem = parse_bool(cell, INDIA)
    assert (value, problem) == (expected, None)
    assert type(value) is bool


@pytest.mark.parametrize("cell", ["maybe", "2", "1.0", "t", "on", "ja", 2, 0.5])
def test_carry_over_that_is_not_yes_or_no_is_rejected(cell: Any) -> None:
    assert parse_bool(cell, INDIA) == (None, NOT_BOOL)


# --- whole numbers and gaps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("5", 5),
        ("-3", -3),
        ("+3", 3),
        (" 12 ", 12),
        ("0", 0),
        ("007", 7),
        ("5.0", 5),
        ("5.", 5),
        (5.0, 5),
        (7, 7),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_whole_number_from_text_or_excel_number(cell: Any, expected: int) -> None:
    value, problem = parse_whole_number(cell, INDIA)
    assert (value, problem) == (expected, None)
    assert type(value) is int


@pytest.mark.parametrize(
    "cell", ["5.5", "1e3", "1,000", "five", "5 6", True, 5.5, math.nan, math.inf, "9" * 5000]
)
def test_whole_number_that_is_not_one_is_rejected(cell: Any) -> None:
    assert parse_whole_number(cell, INDIA) == (None, NOT_WHOLE)


@pytest.mark.parametrize(
    "cell", ["9223372036854775808", "99999999999999999999", "-99999999999999999999", 1e20]
)
def test_whole_number_too_large_for_the_api_is_rejected_not_a_crash(cell: Any) -> None:
    assert parse_whole_number(cell, INDIA) == (None, "is out of range")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("30", 30),
        (30.0, 30),
        (30, 30),
        ("[30]", 30),
        ("30,120", [30, 120]),
        ("30;120", [30, 120]),
        ("[30, 120]", [30, 120]),
        (" 30 , 60 ; 120 ", [30, 60, 120]),
        ("[30;60]", [30, 60]),
    ],
)
def test_gap_is_one_number_or_a_list_of_minutes(cell: Any, expected: int | list[int]) -> None:
    assert parse_gap(cell, INDIA) == (expected, None)


@pytest.mark.parametrize(
    "cell", ["30 120", "30,", ",", "[]", "30,,120", "30.5", "half an hour", "[30, x]", True, 2.5]
)
def test_gap_that_is_not_whole_minutes_is_rejected(cell: Any) -> None:
    assert parse_gap(cell, INDIA) == (None, NOT_GAP)


@pytest.mark.parametrize(
    "cell", ["99999999999999999999", 1e20, "30,99999999999999999999", "[30; 9223372036854775808]"]
)
def test_gap_too_large_for_the_api_is_rejected_not_sent(cell: Any) -> None:
    # The same 64-bit bound as the other integer fields: a gap of 10^20 minutes is a typo.
    assert parse_gap(cell, INDIA) == (None, "is out of range")


# --- a whole column ----------------------------------------------------------------------------------


def as_lists(parsed: tuple[Any, Any]) -> tuple[list[Any], list[Any]]:
    """``parse_column``'s values and problems as lists, a missing value as None."""
    values, problems = parsed
    return [None if pd.isna(v) else v for v in values], list(problems)


def test_blank_cells_parse_to_nothing_and_no_problem() -> None:
    cells = pd.Series(["", "  ", "5", math.nan], dtype=object)
    parsed = as_lists(parse_column("priority", cells, INDIA))
    assert parsed == ([None, None, 5, None], [None, None, None, None])


def test_equal_cells_of_different_types_are_parsed_separately() -> None:
    # 1, 1.0 and True are equal as dict keys; a boolean priority is still wrong.
    cells = pd.Series([1, True, 1.0, 1], dtype=object)
    parsed = as_lists(parse_column("priority", cells, INDIA))
    assert parsed == ([1, None, 1, 1], [None, NOT_WHOLE, None, None])


# --- metadata ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("5", 5),
        ("-3", -3),
        ("0", 0),
        ("2.5", 2.5),
        ("-2.5", -2.5),
        ("0.0", 0.0),
        ("007", "007"),
        ("-0", "-0"),
        ("+5", "+5"),
        ("1e5", "1e5"),
        ("1E5", "1E5"),
        (".5", ".5"),
        ("5.", "5."),
        (" 5", " 5"),
        ("5 ", "5 "),
        ("1,000", "1,000"),
        ("NaN", "NaN"),
        ("inf", "inf"),
        ("Infinity", "Infinity"),
        ("+919876543210", "+919876543210"),
        ("Asha", "Asha"),
        ("1" + "0" * 400 + ".5", "1" + "0" * 400 + ".5"),
        (5.0, 5),
        (-3.0, -3),
        (2.5, 2.5),
        (919876543210.0, 919876543210),
        (7, 7),
        (True, True),
        (False, False),
        (dt.datetime(2030, 5, 28, 9, 30, 15, 500), "2030-05-28T09:30:15"),
        (dt.date(2030, 5, 28), "2030-05-28"),
        (dt.time(8, 30), "08:30:00"),
    ],
)
def test_metadata_cell_is_sent_as_the_json_value_it_means(cell: Any, expected: Any) -> None:
    value = metadata_value(cell)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("cell", ["", "   ", "\t", None, math.nan, math.inf, -math.inf])
def test_metadata_cell_that_is_blank_or_not_a_number_is_left_out(cell: Any) -> None:
    assert metadata_value(cell) is None


@pytest.mark.parametrize("text", ["5\n", "2.5\n", "1\u0662", "1.\u0665", "\u0661\u0662"])
def test_metadata_text_that_only_looks_like_a_number_stays_the_exact_text(text: str) -> None:
    # A line break after the digits, or digits of another script, are not a canonical number.
    assert metadata_value(text) == text


def test_metadata_integer_text_too_long_for_python_stays_text() -> None:
    digits = "9" * 5000
    assert metadata_value(digits) == digits


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text().filter(lambda t: t.strip()),
        st.from_regex(r"\A-?\d{1,400}(\.\d{1,400})?([eE][+-]?\d{1,4})?\Z"),
    )
)
def test_metadata_text_never_becomes_nan_infinity_or_nothing(text: str) -> None:
    value = metadata_value(text)
    assert value is not None
    assert value == text or isinstance(value, int | float)
    if isinstance(value, float):
        assert math.isfinite(value)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("12345678901234567890.5", "12345678901234567890.5"),  # no double holds it
        ("12345678901234567", "12345678901234567"),  # above 2**53: a JavaScript reader changes it
        ("-12345678901234567", "-12345678901234567"),
        ("1.10", "1.10"),  # a version or a price band: the trailing zero is part of it
        ("0.10", "0.10"),
        ("0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827"),
        (str(2**53), 2**53),
        (str(-(2**53)), -(2**53)),
        (str(2**53 + 1), str(2**53 + 1)),
        ("0.1", 0.1),
        ("123.456", 123.456),
        (12345678901234567, "12345678901234567"),  # an integer cell above 2**53
        (2**53, 2**53),
    ],
)
def test_metadata_number_that_a_double_would_change_is_sent_as_the_text_written(
    cell: Any, expected: Any
) -> None:
    value = metadata_value(cell)
    assert value == expected
    assert type(value) is type(expected)
    # What a double-based JSON reader (JavaScript's) makes of it is what the sheet says.
    if isinstance(value, int | float):
        assert float(json.loads(json.dumps(value))) == value
