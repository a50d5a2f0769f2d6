"""``callkaro-loader template PATH``: an empty contacts sheet that loads as it is.

Every call-field column and two example metadata columns, and no row a run
would send: a rep typing leads below an example row would dial the
example's number, so the examples live in the header comments. The Excel
template also guards against what Excel does to typed values:
the phone and retry-gap columns are formatted as text (so ``+91 98765
43210`` keeps its plus and ``30,120`` does not become the number 30120),
the date and time columns carry their formats, each header explains its
column in a cell comment, and data validation keeps ``carry_over``,
``number_of_retries``, ``priority`` and the times within their rules.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from loader.columns import ROW_FIELDS
from loader.errors import UsageError, cannot_write
from loader.files import check_output
from loader.results import atomic_write

#: What each column means, for the header comments.
DESCRIPTIONS = {
    "to_number": "Required. The phone number to call, with its country code, e.g. +91 98765 43210. Numbers "
    "without one need --default-region when loading. This column is formatted as text so Excel "
    "keeps every digit.",
    "schedule_at": "Optional. When to call: a date and time in the future, e.g. 2030-05-28 09:30. "
    "Blank: as soon as possible.",
    "min_trigger_time": "Optional. Start of each day's calling window, e.g. 09:00.",
    "max_trigger_time": "Optional. End of each day's calling window, e.g. 18:00; after the start.",
    "carry_over": "Optional. yes: a call not made by the window's end moves to the next day.",
    "number_of_retries": "Optional. How often to call again when nobody picks up: 0 or more.",
    "gap_between_retries": "Optional. Minutes between retries: one value (30) or one per retry (30,120).",
    "priority": "Optional. A whole number from -100 to 100; higher is called first.",
}
METADATA_EXAMPLES = {"name": "e.g. Asha Rao. ", "city": "e.g. Pune. "}
METADATA_DESCRIPTION = (
    "Example metadata column: every column that is not a call field is sent to the agent with the "
    "call, named by its header. Rename, add or delete such columns freely."
)
TEXT_FORMAT = "@"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
TIME_FORMAT = "hh:mm"


def write_template(path: str | Path) -> Path:
    """Write the template to ``path`` (``.xlsx`` or ``.csv``); an existing file is never replaced."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise UsageError(f"template {path} must end in .xlsx or .csv")
    check_output(path, "template")
    if path.exists():
        raise UsageError(
            f"{path} already exists; the template never replaces a file", hint="Choose another name."
        )
    write = _write_csv if suffix == ".csv" else _write_xlsx
    try:
        atomic_write(path, write, binary=suffix == ".xlsx")
    except OSError as exc:
        raise cannot_write(str(path), exc) from None
    return path


def _headers() -> list[str]:
    return [*ROW_FIELDS, *METADATA_EXAMPLES]


def _write_csv(handle: IO[Any]) -> None:
    # The headers alone: a CSV has nowhere to keep examples that a run would not read as a contact.
    csv.writer(handle, lineterminator="\r\n").writerow(_headers())


def _write_xlsx(handle: IO[Any]) -> None:
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "contacts"
    headers = _headers()
    letter = {name: get_column_letter(i) for i, name in enumerate(headers, start=1)}
    formats = {
        "to_number": TEXT_FORMAT,
        "gap_between_retries": TEXT_FORMAT,
        "schedule_at": DATETIME_FORMAT,
        "min_trigger_time": TIME_FORMAT,
        "max_trigger_time": TIME_FORMAT,
    }
    for index, name in enumerate(headers, start=1):
        head = sheet.cell(row=1, column=index, value=name)
        head.font = Font(bold=True)
        text = DESCRIPTIONS.get(name) or METADATA_EXAMPLES[name] + METADATA_DESCRIPTION
        comment = Comment(text, "callkaro-loader")
        comment.width, comment.height = 300, 110
        head.comment = comment
        if name in formats:
            # New cells typed into the column take the column's format.
            sheet.column_dimensions[letter[name]].number_format = formats[name]
        sheet.column_dimensions[letter[name]].width = max(14, len(name) + 4)
    sheet.freeze_panes = "A2"

    def validation(name: str, rule: DataValidation, title: str, message: str) -> None:
        rule.error, rule.errorTitle, rule.prompt, rule.promptTitle = message, title, message, title
        rule.showErrorMessage = rule.showInputMessage = True
        rule.allow_blank = True
        rule.add(f"{letter[name]}2:{letter[name]}1048576")
        sheet.add_data_validation(rule)

    validation(
        "carry_over",
        DataValidation(type="list", formula1='"yes,no"'),
        "carry_over",
        "Choose yes or no, or leave blank.",
    )
    validation(
        "number_of_retries",
        DataValidation(type="whole", operator="greaterThanOrEqual", formula1="0"),
        "number_of_retries",
        "A whole number, 0 or more.",
    )
    validation(
        "priority",
        DataValidation(type="whole", operator="between", formula1="-100", formula2="100"),
        "priority",
        "A whole number from -100 to 100.",
    )
    for name in ("min_trigger_time", "max_trigger_time"):
        validation(
            name,
            DataValidation(type="time", operator="between", formula1="0", formula2="0.999988425925926"),
            name,
            "A time of day, e.g. 09:30.",
        )
    workbook.save(handle)
