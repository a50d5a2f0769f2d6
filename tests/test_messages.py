"""Messages that fit the problem (issue 16): totals rows, short numbers with a country code, the
calling window's end, and phone numbers exported as floats or in full scientific notation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.cells import Cell
from loader.columns import map_columns
from loader.list_entries import read_entries
from loader.normalise import Context
from loader.phones import parse_phone, parse_phone_column
from loader.read import Sheet
from loader.report import bad_cells
from loader.validate import Defaults, Validation, validate_rows

MakeSheet = Callable[..., Sheet]


@pytest.fixture
def check(make_sheet: MakeSheet, ctx: Context) -> Callable[..., Validation]:
    def run(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> Validation:
        sheet = make_sheet(headers, rows)
        return validate_rows(sheet, map_columns(sheet, None), ctx, defaults=Defaults({}))

    return run


LEADS = [["Asha", "+91 98111 22233"], ["Ravi", "+91 98111 22234"], ["Meena", "98111 22235"]]


@pytest.mark.parametrize("label", ["Total", "Grand Total", "TOTAL:", "Sub-total"])
def test_a_labelled_totals_row_at_the_bottom_says_to_delete_it(
    check: Callable[..., Validation], label: str
) -> None:
    validation = check(["Name", "Phone"], [*LEADS, [label, "3"]])
    assert validation.status[5] == "invalid"
    assert "looks like a totals row" in validation.message[5]
    assert "delete" in validation.message[5]
    assert "not a valid phone number" not in validation.message[5]
    assert (validation.status.loc[2:4] == "valid").all()


def test_the_last_rows_with_total_labels_are_all_totals_rows(check: Callable[..., Validation]) -> None:
    validation = check(["Name", "Phone"], [*LEADS, ["Subtotal", "2"], ["Grand Total", "3"]])
    assert "looks like a totals row" in validation.message[5]
    assert "looks like a totals row" in validation.message[6]


def test_a_sum_under_the_phone_column_is_a_totals_row(check: Callable[..., Validation]) -> None:
    rows: list[list[Cell]] = [["Asha", 9811122233], ["Ravi", 9811122234], ["", 9811122233 + 9811122234]]
    validation = check(["Name", "Phone"], rows)
    assert validation.status[4] == "invalid"
    assert "looks like a totals row" in validation.message[4]


def test_a_total_label_above_other_rows_is_not_a_totals_row(check: Callable[..., Validation]) -> None:
    validation = check(["Name", "Phone"], [["Total", "12"], *LEADS])
    assert "looks like a totals row" not in validation.message[2]
    assert "not a valid phone number" in validation.message[2]


def test_a_short_number_with_its_country_code_is_not_told_to_add_one(
    check: Callable[..., Validation], make_sheet: MakeSheet, ctx: Context
) -> None:
    validation = check(["Name", "Phone"], [["Asha", "+91 9811 12"]])
    message = validation.message[2]
    assert "too short" in message
    assert "+91" in message.split("9811 12", 1)[1]  # what a valid one looks like
    sheet = make_sheet(["Name", "Phone"], [["Asha", "+91 9811 12"]])
    columns = map_columns(sheet, None)
    comments = bad_cells(sheet, columns, validate_rows(sheet, columns, ctx))
    assert all("country code" not in line for lines in comments.values() for line in lines)


def test_calling_window_message_shows_the_end_it_is_not_before(check: Callable[..., Validation]) -> None:
    validation = check(
        ["Phone", "Min Trigger Time", "Max Trigger Time"], [["+919876543210", "11:00", "10:00"]]
    )
    assert validation.message[2] == "Min Trigger Time: 11:00 is not before max_trigger_time 10:00"


@pytest.mark.parametrize("written", ["9876543210.0", "9.87654321E9", "9.876543210E+09", "+919876543210.0"])
def test_float_and_full_scientific_exports_are_read(written: str) -> None:
    assert parse_phone(written, "IN") == ("+919876543210", None)
    numbers, problems = parse_phone_column(pd.Series([written, "98111 22233"], dtype="str"), "IN")
    assert (numbers[0], problems[0]) == ("+919876543210", None)


@pytest.mark.parametrize("written", ["9.81E+09", "9.87654E9", "9.8765432E9"])
def test_scientific_notation_that_lost_digits_is_refused(written: str) -> None:
    for _, problem in [parse_phone(written, "IN")]:
        assert problem is not None and "scientific notation" in problem
    _, problems = parse_phone_column(pd.Series([written], dtype="str"), "IN")
    assert "scientific notation" in problems[0]


def _national(region: str, kind: Any) -> st.SearchStrategy[str]:
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    nsn = phonenumbers.national_significant_number(example)
    return st.text("0123456789", min_size=4, max_size=4).map(lambda tail: nsn[:-4] + tail)


def _full_scientific(digits: str) -> str:
    return f"{digits[0]}.{digits[1:]}E{len(digits) - 1}"


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["IN", "US", "GB", "DE", "AE"]).flatmap(
        lambda region: st.tuples(st.just(region), _national(region, phonenumbers.PhoneNumberType.MOBILE))
    )
)
def test_any_valid_number_written_as_a_float_or_in_full_scientific_reads_the_same(
    pair: tuple[str, str],
) -> None:
    region, nsn = pair
    number = phonenumbers.parse(nsn, region)
    if not phonenumbers.is_valid_number(number):
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    digits = str(number.country_code) + nsn
    forms = [f"{nsn}.0", _full_scientific(nsn), f"+{digits}.0", "+" + _full_scientific(digits)]
    if nsn.endswith("0") and not nsn.endswith("00"):
        forms.append(_full_scientific(nsn[:-1]).replace(f"E{len(nsn) - 2}", f"E{len(nsn) - 1}"))
    for written in forms:
        assert parse_phone(written, region) == (e164, None), written
    numbers, problems = parse_phone_column(pd.Series(forms, dtype="str"), region)
    assert list(numbers) == [e164] * len(forms)
    assert all(p is None for p in problems)
    # A list also reads digits as a number that lost its +: it suppresses every reading.
    assert all(e164 in entry.numbers for entry in read_entries(forms, region))


def test_a_count_under_the_phone_column_is_a_totals_row(check: Callable[..., Validation]) -> None:
    validation = check(["Name", "Phone"], [*LEADS, ["", "3"]])
    assert "looks like a totals row" in validation.message[5]


def test_a_last_contact_whose_number_is_no_sum_is_a_contact(check: Callable[..., Validation]) -> None:
    rows: list[list[Cell]] = [["Asha", 9811122233], ["Ravi", 9811122234], ["Meena", 9811122235]]
    validation = check(["Name", "Phone"], rows)
    assert (validation.status == "valid").all()
