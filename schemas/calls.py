"""The rules of a call request, one field per field of the API's table.

The frame checked here holds parsed values (``loader.normalise``): E.164
text, ``YYYY-MM-DDTHH:MM:SS`` text, ``HH:MM`` text, booleans, integers.
A cell that was blank or could not be parsed is null, so every field is
nullable here; what is *required* (a phone number) is enforced when the
cells are parsed. Each check's ``error`` completes the sentence
``"<column>: <value> ..."`` that users read in the results file.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from loader.pandera_quiet import Series, pa

E164 = r"^\+[1-9]\d{6,14}$"
SCHEDULE_AT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"
TIME_OF_DAY = r"^([01]\d|2[0-3]):[0-5]\d$"
PRIORITY_RANGE = (-100, 100)

#: Each row-level check, and the column its failure is reported against.
WINDOW_ERROR = "is not before max_trigger_time"
ROW_CHECK_COLUMNS = {WINDOW_ERROR: "min_trigger_time"}


def _positive_minutes(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


class CallRequests(pa.DataFrameModel):
    """One row per call to schedule, as ``POST /call/outbound`` takes it."""

    to_number: Series[str] = pa.Field(nullable=True, str_matches=E164)
    schedule_at: Series[str] = pa.Field(nullable=True, str_matches=SCHEDULE_AT)
    min_trigger_time: Series[str] = pa.Field(nullable=True, str_matches=TIME_OF_DAY)
    max_trigger_time: Series[str] = pa.Field(nullable=True, str_matches=TIME_OF_DAY)
    carry_over: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    number_of_retries: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    gap_between_retries: Series[object] = pa.Field(nullable=True)
    priority: Series[pd.Int64Dtype] = pa.Field(nullable=True)

    @pa.check("number_of_retries", error="is below 0; use 0 or more retries")
    def retries_not_negative(cls, series: Series[pd.Int64Dtype]) -> pd.Series:
        return series.isna() | (series >= 0)

    @pa.check("gap_between_retries", error="is not above 0; gaps are whole minutes above 0")
    def gaps_positive(cls, series: Series[object]) -> pd.Series:
        return series.map(_positive_minutes).astype(bool)

    @pa.check("priority", error=f"is outside [{PRIORITY_RANGE[0]}, {PRIORITY_RANGE[1]}]")
    def priority_in_range(cls, series: Series[pd.Int64Dtype]) -> pd.Series:
        low, high = PRIORITY_RANGE
        return series.isna() | series.between(low, high)

    @pa.dataframe_check(error=WINDOW_ERROR)
    def window_in_order(cls, frame: pd.DataFrame) -> pd.Series:
        start, end = frame["min_trigger_time"], frame["max_trigger_time"]
        return (start.isna() | end.isna() | (start < end)).astype(bool)

    class Config:
        strict = True
        coerce = False
        ordered = False
