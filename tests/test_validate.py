"""Stage 3: every row is checked completely, and each gets its status and message."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from loader.cells import Cell
from loader.columns import map_columns
from loader.errors import UsageError
from loader.normalise import Context
from loader.read import Sheet
from loader.validate import Defaults, Validation, validate_rows

MakeSheet = Callable[..., Sheet]

#: Every call field, headed as the template heads them (the API's order).
ALL_FIELDS = [
    "to_number",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "carry_over",
    "number_of_retries",
    "gap_between_retries",
    "priority",
]
GOOD_ROW = ["+919876543210", "2030-05-28 09:30", "09:00", "18:00", "yes", "2", "30,120", "5"]


@pytest.fixture
def check(make_sheet: MakeSheet, ctx: Context) -> Callable[..., Validation]:
    """Map and validate a sheet given as headers and rows."""

    def run(
        headers: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        *,
        defaults: dict[str, Cell] | None = None,
        allow_duplicates: bool = False,
        overrides: dict[str, str] | None = None,
        context: Context | None = None,
    ) -> Validation:
        sheet = make_sheet(headers, rows)
        return validate_rows(
            sheet,
            map_columns(sheet, overrides),
            context or ctx,
            defaults=Defaults(defaults or {}),
            allow_duplicates=allow_duplicates,
        )

    return run


def test_good_rows_are_valid_with_no_message(check: Callable[..., Validation]) -> None:
    validation = check(ALL_FIELDS, [GOOD_ROW, ["+91 98765 43211"] + [""] * 7])
    assert validation.status.to_dict() == {2: "valid", 3: "valid"}
    assert validation.message.to_dict() == {2: "", 3: ""}
    assert validation.problems.empty
    assert validation.counts() == {"valid": 2}


def test_parsed_request_holds_what_the_api_will_get(check: Callable[..., Validation]) -> None:
    request = check(ALL_FIELDS, [GOOD_ROW]).requests.loc[2]
    assert request.to_dict() == {
        "to_number": "+919876543210",
        "schedule_at": "2030-05-28T09:30:00",
        "min_trigger_time": "09:00",
        "max_trigger_time": "18:00",
        "carry_over": True,
        "number_of_retries": 2,
        "gap_between_retries": [30, 120],
        "priority": 5,
    }


@pytest.mark.parametrize(
    ("field", "cell", "message"),
    [
        ("to_number", "12345", "to_number: 12345 is not a valid phone number for IN"),
        (
            "to_number",
            "9.19877E+11",
            "to_number: 9.19877E+11 was mangled by a spreadsheet into scientific "
            "notation, so its digits are lost; format the column as text and type the number again",
        ),
        (
            "schedule_at",
            "2030-05-28",
            "schedule_at: 2030-05-28 is a date without a time; add the time, e.g. 2030-05-28 09:30",
        ),
        (
            "schedule_at",
            "2029-06-01 09:00",
            "schedule_at: 2029-06-01 09:00 is in the past; use a later time or --allow-past",
        ),
        (
            "min_trigger_time",
            "25:00",
            "min_trigger_time: 25:00 is not a time of day; write it as HH:MM, e.g. 08:30 or 8:30 PM",
        ),
        ("carry_over", "maybe", "carry_over: maybe is not yes or no; write true/false, yes/no, y/n or 1/0"),
        ("number_of_retries", "two", "number_of_retries: two is not a whole number"),
        ("number_of_retries", "-1", "number_of_retries: -1 is below 0; use 0 or more retries"),
        ("gap_between_retries", "0", "gap_between_retries: 0 is not above 0; gaps are whole minutes above 0"),
        (
            "gap_between_retries",
            "30,0",
            "gap_between_retries: 30,0 is not above 0; gaps are whole minutes above 0",
        ),
        (
            "gap_between_retries",
            "-5",
            "gap_between_retries: -5 is not above 0; gaps are whole minutes above 0",
        ),
        ("priority", "150", "priority: 150 is outside [-100, 100]"),
        ("priority", "-101", "priority: -101 is outside [-100, 100]"),
        ("priority", "high", "priority: high is not a whole number"),
        ("priority", "99999999999999999999", "priority: 99999999999999999999 is out of range"),
    ],
)
def test_bad_cell_message_names_column_value_and_rule(
    check: Callable[..., Validation], field: str, cell: str, message: str
) -> None:
    row = ["+919876543210"] + [""] * 7
    row[ALL_FIELDS.index(field)] = cell
    validation = check(ALL_FIELDS, [row])
    assert (validation.status[2], validation.message[2]) == ("invalid", message)


@pytest.mark.parametrize(("cell", "ok"), [("100", True), ("-100", True), ("0", True), ("101", False)])
def test_priority_range_is_inclusive(check: Callable[..., Validation], cell: str, ok: bool) -> None:
    assert check(["Phone", "Priority"], [["+919876543210", cell]]).status[2] == ("valid" if ok else "invalid")


def test_message_names_the_column_by_its_header_as_written(check: Callable[..., Validation]) -> None:
    validation = check(
        ["Mobile No", "Call Priority"],
        [["12345", "150"]],
        overrides={"Mobile No": "to_number", "Call Priority": "priority"},
    )
    assert validation.message[2] == (
        "Mobile No: 12345 is not a valid phone number for IN; Call Priority: 150 is outside [-100, 100]"
    )


def test_every_problem_of_a_row_is_reported_joined_in_column_order(check: Callable[..., Validation]) -> None:
    validation = check(
        ALL_FIELDS, [["12345", "2030-05-28", "10:00", "09:00", "maybe", "-1", "0", "150"], GOOD_ROW]
    )
    assert validation.status.to_dict() == {2: "invalid", 3: "valid"}
    assert validation.message[2] == "; ".join(
        [
            "to_number: 12345 is not a valid phone number for IN",
            "schedule_at: 2030-05-28 is a date without a time; add the time, e.g. 2030-05-28 09:30",
            "min_trigger_time: 10:00 is not before max_trigger_time 09:00",
            "carry_over: maybe is not yes or no; write true/false, yes/no, y/n or 1/0",
            "number_of_retries: -1 is below 0; use 0 or more retries",
            "gap_between_retries: 0 is not above 0; gaps are whole minutes above 0",
            "priority: 150 is outside [-100, 100]",
        ]
    )


def test_problems_table_has_one_line_per_problem_as_the_report_writes_it(
    check: Callable[..., Validation],
) -> None:
    validation = check(
        ["Phone", "Priority", "Retries"],
        [["+919876543210", "150", ""], ["12345", "x", ""]],
        overrides={"Retries": "number_of_retries"},
    )
    assert validation.problems.to_dict("records") == [
        {"source_row": 2, "column": "Priority", "value": "150", "error": "is outside [-100, 100]"},
        {"source_row": 3, "column": "Phone", "value": "12345", "error": "is not a valid phone number for IN"},
        {"source_row": 3, "column": "Priority", "value": "x", "error": "is not a whole number"},
    ]


def test_long_bad_value_is_shortened_in_the_message(check: Callable[..., Validation]) -> None:
    validation = check(["Phone", "Priority"], [["+919876543210", "x" * 100]])
    assert validation.message[2] == f"Priority: {'x' * 59}… is not a whole number"
    assert validation.problems.loc[0, "value"] == "x" * 100


@pytest.mark.parametrize(("start", "end"), [("10:00", "09:00"), ("09:00", "09:00"), ("9 PM", "8:30 PM")])
def test_calling_window_that_does_not_open_before_it_closes_is_invalid(
    check: Callable[..., Validation], start: str, end: str
) -> None:
    validation = check(["Phone", "Min Trigger Time", "Max Trigger Time"], [["+919876543210", start, end]])
    assert validation.status[2] == "invalid"
    assert validation.message[2] == f"Min Trigger Time: {start} is not before max_trigger_time {end}"


@pytest.mark.parametrize(
    ("start", "end"), [("09:00", "18:00"), ("8:30 PM", "9 PM"), ("09:00", ""), ("", "09:00")]
)
def test_calling_window_in_order_or_half_open_is_valid(
    check: Callable[..., Validation], start: str, end: str
) -> None:
    validation = check(["Phone", "Min Trigger Time", "Max Trigger Time"], [["+919876543210", start, end]])
    assert validation.status[2] == "valid"


@pytest.mark.parametrize("blank", ["", "   "])
def test_row_without_a_phone_number_is_invalid(check: Callable[..., Validation], blank: str) -> None:
    validation = check(["Phone", "Name", "Priority"], [[blank, "Asha", "150"]])
    assert validation.status[2] == "invalid"
    assert validation.message[2] == (
        "Phone: is blank; every row needs a phone number; Priority: 150 is outside [-100, 100]"
    )


def test_status_and_message_are_indexed_by_spreadsheet_row(make_sheet: MakeSheet, ctx: Context) -> None:
    sheet = make_sheet(["Phone"], [["+919876543210"], ["bad"]], first_row=5)
    validation = validate_rows(sheet, map_columns(sheet), ctx)
    assert validation.status.to_dict() == {5: "valid", 6: "invalid"}
    assert list(validation.problems["source_row"]) == [6]


# --- duplicates -----------------------------------------------------------------------------------


def test_number_seen_on_an_earlier_row_is_a_duplicate_naming_that_row(
    check: Callable[..., Validation],
) -> None:
    validation = check(
        ["Phone", "Name"],
        [
            ["+91 98765 43210", "Asha"],
            ["+919876543211", "Ravi"],
            ["098765-43210", "Asha again"],
            ["9876543210", "Asha thrice"],
        ],
    )
    assert validation.status.tolist() == ["valid", "valid", "duplicate", "duplicate"]
    assert validation.message.tolist() == [
        "",
        "",
        "Phone: +919876543210 already appears on row 2",
        "Phone: +919876543210 already appears on row 2",
    ]
    assert validation.counts() == {"valid": 2, "duplicate": 2}
    # A duplicate is not a problem with the row.
    assert validation.problems.empty


def test_a_duplicate_that_also_breaks_a_rule_still_says_what_is_wrong(
    check: Callable[..., Validation],
) -> None:
    validation = check(["Phone", "Priority"], [["+919876543210", "5"], ["9876543210", "500"]])
    assert validation.status.tolist() == ["valid", "duplicate"]
    assert validation.message[3] == (
        "Phone: +919876543210 already appears on row 2; Priority: 500 is outside [-100, 100]"
    )
    assert validation.problems["source_row"].tolist() == [3]


def test_allow_duplicates_keeps_every_row_valid(check: Callable[..., Validation]) -> None:
    validation = check(["Phone"], [["+919876543210"], ["+91 98765 43210"]], allow_duplicates=True)
    assert validation.status.tolist() == ["valid", "valid"]


def test_blank_and_invalid_phones_are_not_duplicates_of_each_other(check: Callable[..., Validation]) -> None:
    validation = check(["Phone", "Name"], [["", "a"], ["", "b"], ["12345", "c"], ["12345", "d"]])
    assert validation.status.tolist() == ["invalid"] * 4


# --- run-level defaults -----------------------------------------------------------------------------


def test_default_fills_blank_cells_only(check: Callable[..., Validation]) -> None:
    validation = check(
        ["Phone", "Priority"],
        [["+919876543210", "5"], ["+919876543211", ""], ["+919876543212", "  "]],
        defaults={"priority": "7"},
    )
    assert validation.requests["priority"].tolist() == [5, 7, 7]


def test_default_applies_to_every_row_when_the_sheet_has_no_such_column(
    check: Callable[..., Validation],
) -> None:
    validation = check(
        ["Phone"],
        [["+919876543210"], ["+919876543211"]],
        defaults={"schedule_at": "2030-05-28 09:30", "carry_over": True, "gap_between_retries": "30,60"},
    )
    assert validation.requests["schedule_at"].tolist() == ["2030-05-28T09:30:00"] * 2
    assert validation.requests["carry_over"].tolist() == [True, True]
    assert validation.requests["gap_between_retries"].tolist() == [[30, 60], [30, 60]]


def test_bad_cell_is_not_replaced_by_the_default(check: Callable[..., Validation]) -> None:
    validation = check(["Phone", "Priority"], [["+919876543210", "high"]], defaults={"priority": "7"})
    assert validation.message[2] == "Priority: high is not a whole number"


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"priority": "high"}, "--priority 'high' is not a whole number"),
        ({"priority": "150"}, "--priority '150' is outside [-100, 100]"),
        ({"priority": 150}, "--priority '150' is outside [-100, 100]"),
        ({"number_of_retries": "-1"}, "--retries '-1' is below 0; use 0 or more retries"),
        (
            {"gap_between_retries": "x"},
            "--gap 'x' is not whole minutes; write one number (30) or several (30,120)",
        ),
        ({"gap_between_retries": "30,0"}, "--gap '30,0' is not above 0; gaps are whole minutes above 0"),
        (
            {"carry_over": "maybe"},
            "--carry-over 'maybe' is not yes or no; write true/false, yes/no, y/n or 1/0",
        ),
        (
            {"schedule_at": "2030-05-28"},
            "--schedule-at '2030-05-28' is a date without a time; add the time, e.g. 2030-05-28 09:30",
        ),
        (
            {"schedule_at": "2029-06-01 09:00"},
            "--schedule-at '2029-06-01 09:00' is in the past; use a later time or --allow-past",
        ),
        (
            {"min_trigger_time": "25:00"},
            "--min-trigger-time '25:00' is not a time of day; write it as HH:MM, e.g. 08:30 or 8:30 PM",
        ),
        (
            {"min_trigger_time": "18:00", "max_trigger_time": "09:00"},
            "--min-trigger-time '18:00' is not before max_trigger_time 09:00",
        ),
    ],
)
def test_bad_default_is_refused_naming_its_flag_before_any_row(
    check: Callable[..., Validation], defaults: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check(["Phone"], [["+919876543210"]], defaults=defaults)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"schedule_at": ""}, "--schedule-at is blank"),
        ({"min_trigger_time": "  "}, "--min-trigger-time is blank"),
        ({"priority": ""}, "--priority is blank"),
    ],
)
def test_blank_default_is_refused_rather_than_sending_calls_without_it(
    check: Callable[..., Validation], defaults: dict[str, Any], message: str
) -> None:
    # e.g. cron's --schedule-at "$SLOT" with SLOT unset: the calls must not go out at once instead.
    with pytest.raises(UsageError) as caught:
        check(["Phone", "schedule_at"], [["+919876543210", ""]], defaults=defaults)
    assert str(caught.value) == message
    assert caught.value.hint == "Give it a value, or leave the option out."


def test_default_for_a_run_level_field_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^no default can be given for agent_id$"):
        Defaults({"agent_id": "a1"})


def test_metadata_value_too_long_for_the_agents_prompt_makes_the_row_invalid(
    check: Callable[..., Validation],
) -> None:
    from loader.validate import MAX_METADATA_CHARS

    long_note = "n" * (MAX_METADATA_CHARS + 1)
    validation = check(
        ["Name", "phone", "Notes"],
        [["Asha", "+919876543210", long_note], ["Ravi", "+919876543211", "n" * MAX_METADATA_CHARS]],
    )
    assert validation.status.to_dict() == {2: "invalid", 3: "valid"}
    assert validation.message[2].startswith("Notes: nnnn")
    assert validation.message[2].endswith(
        "is 2,001 characters long; metadata values are limited to 2,000 "
        "(the agent reads them on every call), so shorten it"
    )
    assert validation.problems[["source_row", "column", "value"]].values.tolist() == [[2, "Notes", long_note]]


def test_problems_read_left_to_right_in_the_sheets_column_order(check: Callable[..., Validation]) -> None:
    validation = check(
        ["priority", "Notes", "phone", "min_trigger_time"],
        [["500", "n" * 2001, "12", "25:00"]],
    )
    assert validation.problems["column"].tolist() == ["priority", "Notes", "phone", "min_trigger_time"]


@pytest.mark.parametrize(
    ("start", "end", "sent"),
    [
        ("09:30:59", "17:00:30", ("09:31", "17:00")),
        ("09:30:00", "17:00:00", ("09:30", "17:00")),
        ("9:30:01 AM", "5:59:59 PM", ("09:31", "17:59")),
        (dt.time(9, 30, 0, 1), dt.time(17, 0, 59, 999999), ("09:31", "17:00")),
    ],
)
def test_calling_window_with_seconds_is_narrowed_to_whole_minutes_never_widened(
    check: Callable[..., Validation], start: Any, end: Any, sent: tuple[str, str]
) -> None:
    # The API takes HH:MM: dropping the seconds of the start would open the window before the row asked.
    validation = check(["Phone", "Min Trigger Time", "Max Trigger Time"], [["+919876543210", start, end]])
    assert validation.status[2] == "valid"
    request = validation.requests.loc[2]
    assert (request["min_trigger_time"], request["max_trigger_time"]) == sent


@pytest.mark.parametrize(("start", "end"), [("09:30:30", "09:30:50"), ("09:30", "09:30:45")])
def test_calling_window_emptied_by_rounding_to_minutes_is_invalid_and_says_why(
    check: Callable[..., Validation], start: str, end: str
) -> None:
    validation = check(["Phone", "Min Trigger Time", "Max Trigger Time"], [["+919876543210", start, end]])
    assert validation.status[2] == "invalid"
    assert validation.message[2] == (
        f"Min Trigger Time: {start} is not before max_trigger_time {end} once both are rounded to whole "
        "minutes (the start up, the end down)"
    )


def test_calling_window_starting_in_the_last_minute_of_the_day_is_invalid(
    check: Callable[..., Validation],
) -> None:
    validation = check(["Phone", "Min Trigger Time"], [["+919876543210", "23:59:30"]])
    assert validation.status[2] == "invalid"
    assert "no whole minute of the day is left" in validation.message[2]
