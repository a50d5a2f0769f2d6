"""Stage 4: each sendable row becomes exactly the JSON body the API documents."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import pytest

from loader.cells import Cell
from loader.columns import map_columns
from loader.normalise import Context
from loader.payload import build_bodies
from loader.read import Sheet
from loader.validate import Defaults, validate_rows

MakeSheet = Callable[..., Sheet]

API_ORDER = [
    "to_number",
    "agent_id",
    "batch_id",
    "metadata",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "carry_over",
    "number_of_retries",
    "gap_between_retries",
    "priority",
]
HEADERS = [
    "Phone",
    "Name",
    "Schedule At",
    "Min Trigger Time",
    "Max Trigger Time",
    "Carry Over",
    "Number of Retries",
    "Gap Between Retries",
    "Priority",
    "Customer Code",
    "Visits",
    "Score",
]
#: A row with every field and metadata column filled, written as people write them.
FULL_ROW: list[Cell] = [
    "+91 98765 43210",
    "Asha",
    "2030-05-28 09:30",
    "9:00",
    "8:30 PM",
    "yes",
    "3",
    "30;120",
    "-5",
    "007",
    "5",
    "2.5",
]


@pytest.fixture
def bodies(make_sheet: MakeSheet, ctx: Context) -> Callable[..., dict[int, dict[str, Any]]]:
    def build(
        headers: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        *,
        batch_id: str | None = "batch-1",
        rows_to_send: pd.Index | None = None,
        defaults: dict[str, Cell] | None = None,
    ) -> dict[int, dict[str, Any]]:
        sheet = make_sheet(headers, rows)
        validation = validate_rows(sheet, map_columns(sheet), ctx, defaults=Defaults(defaults or {}))
        return build_bodies(sheet, validation, agent_id="agent-1", batch_id=batch_id, rows=rows_to_send)

    return build


def test_full_row_gives_every_documented_field_with_its_type(bodies: Callable[..., Any]) -> None:
    built = bodies(
        HEADERS,
        [FULL_ROW],
    )
    assert built == {
        2: {
            "to_number": "+919876543210",
            "agent_id": "agent-1",
            "batch_id": "batch-1",
            "metadata": {"Name": "Asha", "Customer Code": "007", "Visits": 5, "Score": 2.5},
            "schedule_at": "2030-05-28T09:30:00",
            "min_trigger_time": "09:00",
            "max_trigger_time": "20:30",
            "carry_over": True,
            "number_of_retries": 3,
            "gap_between_retries": [30, 120],
            "priority": -5,
        }
    }
    body = built[2]
    assert list(body) == API_ORDER
    # Plain Python types only: no numpy or pandas scalars reach the JSON encoder.
    assert [type(body[k]) for k in API_ORDER] == [str, str, str, dict, str, str, str, bool, int, list, int]
    assert all(type(g) is int for g in body["gap_between_retries"])


def test_single_gap_is_sent_as_an_integer(bodies: Callable[..., Any]) -> None:
    built = bodies(["Phone", "Gap Between Retries"], [["+919876543210", "45"], ["+919876543211", "[60]"]])
    assert [b["gap_between_retries"] for b in built.values()] == [45, 60]
    assert all(type(b["gap_between_retries"]) is int for b in built.values())


def test_blank_cells_are_left_out_of_the_body(bodies: Callable[..., Any]) -> None:
    built = bodies(HEADERS, [["+919876543210"] + [""] * (len(HEADERS) - 1)])
    assert built == {2: {"to_number": "+919876543210", "agent_id": "agent-1", "batch_id": "batch-1"}}


def test_only_the_blank_fields_of_a_row_are_left_out(bodies: Callable[..., Any]) -> None:
    built = bodies(
        ["Phone", "Priority", "Carry Over", "Name"],
        [["+919876543210", "1", "", "Asha"], ["+919876543211", "", "no", ""]],
    )
    assert built == {
        2: {
            "to_number": "+919876543210",
            "agent_id": "agent-1",
            "batch_id": "batch-1",
            "metadata": {"Name": "Asha"},
            "priority": 1,
        },
        3: {"to_number": "+919876543211", "agent_id": "agent-1", "batch_id": "batch-1", "carry_over": False},
    }


def test_priority_zero_and_carry_over_false_are_sent_not_dropped(bodies: Callable[..., Any]) -> None:
    built = bodies(
        ["Phone", "Priority", "Carry Over", "Number of Retries"], [["+919876543210", "0", "0", "0"]]
    )
    assert built[2] == {
        "to_number": "+919876543210",
        "agent_id": "agent-1",
        "batch_id": "batch-1",
        "carry_over": False,
        "number_of_retries": 0,
        "priority": 0,
    }


def test_without_a_campaign_the_body_has_no_batch_id(bodies: Callable[..., Any]) -> None:
    assert bodies(["Phone"], [["+919876543210"]], batch_id=None) == {
        2: {"to_number": "+919876543210", "agent_id": "agent-1"}
    }


def test_run_defaults_reach_the_body(bodies: Callable[..., Any]) -> None:
    built = bodies(
        ["Phone", "Priority"],
        [["+919876543210", "9"], ["+919876543211", ""]],
        defaults={"priority": "1", "number_of_retries": "2"},
    )
    assert [(b["priority"], b["number_of_retries"]) for b in built.values()] == [(9, 2), (1, 2)]


def test_excel_typed_cells_become_json_values_and_nan_never_appears(bodies: Callable[..., Any]) -> None:
    built = bodies(
        [
            "Phone",
            "Schedule At",
            "Min Trigger Time",
            "Carry Over",
            "Number of Retries",
            "Joined",
            "Amount",
            "Ratio",
            "VIP",
            "Missing",
        ],
        [
            [
                919876543210.0,
                dt.datetime(2030, 5, 28, 9, 30),
                dt.time(8, 30),
                True,
                2.0,
                dt.date(2024, 1, 15),
                1500.0,
                0.25,
                False,
                math.nan,
            ]
        ],
    )
    assert built[2] == {
        "to_number": "+919876543210",
        "agent_id": "agent-1",
        "batch_id": "batch-1",
        "metadata": {"Joined": "2024-01-15", "Amount": 1500, "Ratio": 0.25, "VIP": False},
        "schedule_at": "2030-05-28T09:30:00",
        "min_trigger_time": "08:30",
        "carry_over": True,
        "number_of_retries": 2,
    }
    json.dumps(built, allow_nan=False)


def test_no_body_is_built_for_invalid_or_duplicate_rows(bodies: Callable[..., Any]) -> None:
    built = bodies(
        ["Phone", "Priority"],
        [
            ["+919876543210", "1"],
            ["+919876543211", "150"],
            ["+91 98765 43210", "2"],
            ["", "3"],
            ["+919876543212", ""],
        ],
    )
    assert list(built) == [2, 6]


def test_rows_limits_which_rows_get_a_body(bodies: Callable[..., Any]) -> None:
    built = bodies(
        ["Phone"], [["+919876543210"], ["+919876543211"], ["+919876543212"]], rows_to_send=pd.Index([4, 2])
    )
    assert {row: body["to_number"] for row, body in built.items()} == {4: "+919876543212", 2: "+919876543210"}


def test_empty_rows_selection_builds_nothing(bodies: Callable[..., Any]) -> None:
    assert bodies(["Phone"], [["+919876543210"]], rows_to_send=pd.Index([], dtype="int64")) == {}


def test_every_body_of_a_mixed_sheet_is_strict_json(bodies: Callable[..., Any]) -> None:
    rows = [
        ["+919876543210", "Asha", "2030-05-28 09:30", "9:00", "", "", "", "30", "", "", "", ""],
        ["+919876543211", "", "", "", "18:00", "n", "1", "", "100", "x", "-3", ""],
        ["+919876543212", "=1+2", "", "", "", "", "", "[5, 10]", "", "", "", "-0"],
    ]
    built = bodies(HEADERS, rows)
    assert len(built) == 3
    text = json.dumps(built, allow_nan=False)
    assert "NaN" not in text and "null" not in text


# --- the column-wise bodies equal the obvious row-by-row ones --------------------------------------


def _reference_bodies(
    sheet: Sheet, validation: Any, *, agent_id: str, batch_id: str | None
) -> dict[int, Any]:
    """Bodies the slow, obvious way: one row at a time through ``to_dict``, in the API's order."""
    from loader.normalise import metadata_value

    bodies: dict[int, Any] = {}
    for row in validation.status.index[validation.status == "valid"]:
        fields = validation.requests.loc[row].to_dict()
        body: dict[str, Any] = {"to_number": fields["to_number"], "agent_id": agent_id}
        if batch_id:
            body["batch_id"] = batch_id
        metadata = {}
        for key, position in validation.columns.metadata:
            value = metadata_value(sheet.cells.loc[row, position])
            if value is not None:
                metadata[key] = value
        if metadata:
            body["metadata"] = metadata
        for name in API_ORDER[4:]:
            value = fields[name]
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                continue
            body[name] = value.item() if hasattr(value, "item") and not isinstance(value, list) else value
        bodies[int(row)] = body
    return bodies


REFERENCE_ROWS: list[list[Cell]] = [
    FULL_ROW,
    ["098450 12345", "", "", "", "", "", "", "", "", "", "", ""],
    [
        "+919876500001",
        "Ravi",
        "2030-05-28T10:00:00+05:30",
        "08:00",
        "",
        "n",
        "0",
        "45",
        "0",
        "12",
        "-3",
        "0.10",
    ],
    [
        919876500002,
        42,
        dt.datetime(2030, 6, 1, 9, 0),
        dt.time(9, 15),
        dt.time(18, 0),
        True,
        2.0,
        60,
        100,
        7.0,
        1.5,
        False,
    ],
    ["+91 98765 00003", "Asha", "", "", "", "FALSE", "1", "[30, 60]", "-100", "1e3", "inf", "NaN"],
    ["+91 98765 00004", "  spaced  ", "", "", "", "", "", "", "", " 5", "5 ", "-0"],
    ["+91 98765 00005", "Asha", "", "", "", "", "", "", "", "007", "5", "2.5"],
    ["+91 98765 43210", "duplicate", "", "", "", "", "", "", "", "", "", ""],
    ["not a number", "invalid", "", "", "", "", "", "", "", "", "", ""],
    ["+91 98765 00006", 1, "", "", "", 1, "", "", "", 1.0, True, dt.date(2030, 1, 2)],
]


@pytest.mark.parametrize("batch_id", ["batch-1", None])
def test_column_wise_bodies_equal_the_row_by_row_reference(
    make_sheet: MakeSheet, ctx: Context, batch_id: str | None
) -> None:
    sheet = make_sheet(HEADERS, REFERENCE_ROWS)
    validation = validate_rows(sheet, map_columns(sheet), ctx, defaults=Defaults({"priority": "1"}))
    assert set(validation.status) == {"valid", "duplicate", "invalid"}
    built = build_bodies(sheet, validation, agent_id="agent-1", batch_id=batch_id)
    expected = _reference_bodies(sheet, validation, agent_id="agent-1", batch_id=batch_id)
    assert built == expected
    # Same values, same types, same key order: the JSON sent is byte for byte the same.
    assert [json.dumps(b) for b in built.values()] == [json.dumps(b) for b in expected.values()]


def test_dry_run_check_builds_every_body_a_chunk_at_a_time(make_sheet: MakeSheet, ctx: Context) -> None:
    from loader.payload import check_bodies

    sheet = make_sheet(HEADERS, REFERENCE_ROWS)
    validation = validate_rows(sheet, map_columns(sheet), ctx)
    valid = int((validation.status == "valid").sum())
    for chunk_rows in (1, 3, 1000):
        assert check_bodies(sheet, validation, agent_id="a", batch_id=None, chunk_rows=chunk_rows) == valid
