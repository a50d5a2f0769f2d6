"""Stage 2: which column is which call field, and which columns become metadata."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from loader.columns import ColumnMap, map_columns, parse_map_options
from loader.errors import ColumnError, UsageError
from loader.read import Sheet, read_sheet

MakeSheet = Callable[..., Sheet]

#: The phone column's other names, as SPEC.md lists them.
SPEC_PHONE_ALIASES = [
    "phone",
    "phone number",
    "mobile",
    "mobile number",
    "number",
    "contact number",
    "msisdn",
    "telephone",
]
CALL_FIELDS = (
    "to_number, schedule_at, min_trigger_time, max_trigger_time, carry_over, "
    "number_of_retries, gap_between_retries, priority"
)


def columns_of(
    make_sheet: MakeSheet, headers: list[str], overrides: dict[str, str] | None = None
) -> ColumnMap:
    return map_columns(make_sheet(headers, [[""] * len(headers)]), overrides)


# --- headers match call fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("to_number", "to_number"),
        ("To Number", "to_number"),
        ("to-number", "to_number"),
        ("TO_NUMBER", "to_number"),
        ("to.number", "to_number"),
        ("  To  Number  ", "to_number"),
        ("Schedule At", "schedule_at"),
        ("schedule-at", "schedule_at"),
        ("Min Trigger Time", "min_trigger_time"),
        ("MAX_TRIGGER_TIME", "max_trigger_time"),
        ("Carry Over", "carry_over"),
        ("Number of Retries", "number_of_retries"),
        ("gap.between.retries", "gap_between_retries"),
        ("PRIORITY", "priority"),
    ],
)
def test_header_matches_its_field_ignoring_case_spaces_and_punctuation(
    make_sheet: MakeSheet, header: str, field: str
) -> None:
    headers = [header] if field == "to_number" else ["Phone", header]
    assert columns_of(make_sheet, headers).fields[field] == len(headers) - 1


@pytest.mark.parametrize("alias", SPEC_PHONE_ALIASES)
@pytest.mark.parametrize("style", [str.lower, str.upper, str.title, lambda h: h.replace(" ", "_")])
def test_every_documented_phone_header_is_the_phone_column(make_sheet: MakeSheet, alias: str, style) -> None:
    columns = columns_of(make_sheet, ["Name", style(alias)])
    assert columns.fields == {"to_number": 1}
    assert columns.metadata == [("Name", 0)]


def test_other_columns_become_metadata_named_by_their_trimmed_header(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "  First Name ,Phone,City ,Loan Amount (₹)\nAsha,+919876543210,Pune,5\n", encoding="utf-8"
    )
    columns = map_columns(read_sheet(path))
    assert columns.fields == {"to_number": 1}
    assert columns.metadata == [("First Name", 0), ("City", 2), ("Loan Amount (₹)", 3)]


def test_header_the_loader_does_not_know_is_metadata_not_a_field(make_sheet: MakeSheet) -> None:
    columns = columns_of(make_sheet, ["Phone", "Retries", "When"])
    assert columns.fields == {"to_number": 0}
    assert [name for name, _ in columns.metadata] == ["Retries", "When"]


@pytest.mark.parametrize(
    "header",
    ["Mobile No.", "Phone No.", "Contact No.", "Cell", "Mob", "WhatsApp Number", "मोबाइल नंबर", "फ़ोन नंबर"],
)
def test_phone_headers_of_crm_exports_name_the_phone_column(make_sheet: MakeSheet, header: str) -> None:
    assert columns_of(make_sheet, ["Name", header]).fields == {"to_number": 1}


def test_a_hindi_header_typed_with_a_separate_nukta_is_the_same_header(make_sheet: MakeSheet) -> None:
    # फ़ as one character (U+095E) and as फ followed by the nukta (U+093C).
    assert columns_of(make_sheet, ["Name", "\u095eोन नंबर"]).fields == {"to_number": 1}
    assert columns_of(make_sheet, ["Name", "\u092b\u093cोन नंबर"]).fields == {"to_number": 1}


def test_a_map_entry_for_a_do_not_call_list_column_is_not_an_error_for_the_sheet(
    make_sheet: MakeSheet,
) -> None:
    sheet = make_sheet(["Name", "Phone"], [["Aarav", "+919876543210"]])
    columns = map_columns(sheet, {"Work Phone": "to_number"}, elsewhere=["Phone", "Work Phone"])
    assert columns.fields == {"to_number": 1}
    with pytest.raises(ColumnError, match="--map names column 'Work Phone'"):
        map_columns(sheet, {"Work Phone": "to_number"})


# --- --map ----------------------------------------------------------------------------------------


def test_map_points_a_field_at_a_header_the_loader_would_not_guess(make_sheet: MakeSheet) -> None:
    columns = columns_of(
        make_sheet, ["Name", "Mobile No", "When"], {"Mobile No": "to_number", "When": "schedule_at"}
    )
    assert columns.fields == {"to_number": 1, "schedule_at": 2}
    assert columns.metadata == [("Name", 0)]


def test_map_header_is_matched_ignoring_case_and_spaces(make_sheet: MakeSheet) -> None:
    assert columns_of(make_sheet, ["Mobile No"], {"mobile_no": "to_number"}).fields == {"to_number": 0}


def test_mapped_away_phone_alias_column_becomes_metadata(make_sheet: MakeSheet) -> None:
    columns = columns_of(make_sheet, ["Phone", "Alt Mobile"], {"Alt Mobile": "to_number"})
    assert columns.fields == {"to_number": 1}
    assert columns.metadata == [("Phone", 0)]


def test_map_settles_two_phone_columns(make_sheet: MakeSheet) -> None:
    columns = columns_of(make_sheet, ["Phone", "Mobile"], {"Mobile": "to_number"})
    assert columns.fields == {"to_number": 1}
    assert columns.metadata == [("Phone", 0)]


def test_map_of_a_header_not_in_the_sheet_is_a_column_error(make_sheet: MakeSheet) -> None:
    with pytest.raises(ColumnError) as caught:
        columns_of(make_sheet, ["Phone", "Name"], {"Mobile": "to_number"})
    assert (
        str(caught.value)
        == "leads.csv: --map names column 'Mobile', which is not in the header row ('Phone', 'Name')"
    )


def test_map_giving_one_field_two_columns_is_a_usage_error(make_sheet: MakeSheet) -> None:
    with pytest.raises(UsageError, match=r"^--map gives to_number more than one column$"):
        columns_of(make_sheet, ["Phone", "Cell", "Other"], {"Cell": "to_number", "Other": "to_number"})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["Mobile No=to_number"], {"Mobile No": "to_number"}),
        ([" Mobile No = to_number "], {"Mobile No": "to_number"}),
        (["a=b=priority"], {"a=b": "priority"}),
        (
            ["When=schedule_at", "Tries=number_of_retries"],
            {"When": "schedule_at", "Tries": "number_of_retries"},
        ),
        ([], {}),
    ],
)
def test_map_options_are_parsed_into_header_and_field(options: list[str], expected: dict[str, str]) -> None:
    assert parse_map_options(options) == expected


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("Mobile No", '--map "Mobile No" is not of the form "HEADER=FIELD"'),
        ("=to_number", '--map "=to_number" is not of the form "HEADER=FIELD"'),
        ("Mobile No=", '--map "Mobile No=" is not of the form "HEADER=FIELD"'),
        (
            "Owner=agent_id",
            f"--map \"Owner=agent_id\": 'agent_id' is not a call field; use one of {CALL_FIELDS}",
        ),
        ("Mobile=phone", f"--map \"Mobile=phone\": 'phone' is not a call field; use one of {CALL_FIELDS}"),
    ],
)
def test_bad_map_option_is_a_usage_error_quoting_it(option: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_map_options([option])
    assert str(caught.value) == message


# --- headers that cannot be mapped ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "listed", "field", "first"),
    [
        (["Phone", "Mobile"], "'Phone' and 'Mobile'", "to_number", "Phone"),
        (["to_number", "Name", "Phone Number"], "'to_number' and 'Phone Number'", "to_number", "to_number"),
        (["Phone", "Priority", "PRIORITY"], "'Priority' and 'PRIORITY'", "priority", "Priority"),
        (
            ["Phone", "Schedule At", "schedule_at"],
            "'Schedule At' and 'schedule_at'",
            "schedule_at",
            "Schedule At",
        ),
    ],
)
def test_two_columns_for_one_field_names_both_and_suggests_map(
    make_sheet: MakeSheet, headers: list[str], listed: str, field: str, first: str
) -> None:
    with pytest.raises(ColumnError) as caught:
        columns_of(make_sheet, headers)
    assert str(caught.value) == f"leads.csv: columns {listed} both look like {field}"
    assert caught.value.hint == f'Say which one to use, e.g. --map "{first}={field}", or rename the other.'


def test_sheet_without_a_phone_column_is_a_column_error_suggesting_map(make_sheet: MakeSheet) -> None:
    with pytest.raises(ColumnError) as caught:
        columns_of(make_sheet, ["Name", "", "Customer Contact"])
    assert str(caught.value) == "leads.csv: no phone number column (headers: 'Name', 'Customer Contact')"
    assert (
        caught.value.hint == 'Name it "to_number" or "phone", or point at it with --map "HEADER=to_number".'
    )


@pytest.mark.parametrize(
    ("header", "name", "flag"),
    [
        ("agent_id", "agent_id", ", or use --agent-id"),
        ("Agent ID", "agent_id", ", or use --agent-id"),
        ("batch_id", "batch_id", ", or use --batch-id"),
        ("Batch-Id", "batch_id", ", or use --batch-id"),
        ("metadata", "metadata", ""),
    ],
)
def test_column_for_a_run_level_field_is_a_column_error_with_a_hint(
    make_sheet: MakeSheet, header: str, name: str, flag: str
) -> None:
    with pytest.raises(ColumnError) as caught:
        columns_of(make_sheet, ["Phone", header])
    assert str(caught.value) == (
        f"leads.csv: column {header!r} would set {name} per row, but {name} is set for the whole run"
    )
    assert caught.value.hint == (
        f"Rename the column if it is information for the agent (it then goes into metadata){flag}."
    )


def test_two_metadata_columns_with_one_header_is_a_column_error(make_sheet: MakeSheet) -> None:
    with pytest.raises(ColumnError) as caught:
        columns_of(make_sheet, ["Phone", "Name", "Name"])
    assert str(caught.value) == "leads.csv: two columns are headed 'Name'; metadata keys must be unique"


# --- columns that are neither fields nor metadata -------------------------------------------------------


def test_results_columns_of_an_earlier_run_are_ignored(make_sheet: MakeSheet) -> None:
    columns = columns_of(
        make_sheet,
        ["Phone", "Name", "source_row", "callkaro_status", "Callkaro Call ID", "callkaro-message"],
    )
    assert columns.fields == {"to_number": 0}
    assert columns.metadata == [("Name", 1)]
    assert columns.ignored == [2, 3, 4, 5]


@pytest.mark.parametrize(
    ("position", "name"),
    [(1, "column B"), (5, "column F"), (25, "column Z"), (26, "column AA"), (27, "column AB")],
)
def test_unnamed_column_with_data_is_keyed_by_its_excel_letter(
    make_sheet: MakeSheet, position: int, name: str
) -> None:
    headers = ["Phone"] + [f"h{i}" for i in range(1, position)] + [""]
    columns = columns_of(make_sheet, headers)
    assert columns.metadata[-1] == (name, position)
