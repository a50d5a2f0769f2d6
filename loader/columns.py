"""Stage 2: decide which column holds which call field; the rest is metadata.

Headers match call fields ignoring case, spaces, ``_``, ``-`` and ``.``; the
phone column may also go by the common names in ``PHONE_ALIASES``. ``--map
"HEADER=FIELD"`` overrides the guess. Columns named like the results file's
own columns (a results file loaded again after fixing it) are carried along
but neither sent nor treated as metadata.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loader.errors import ColumnError, UsageError

if TYPE_CHECKING:  # the command line imports this module before pandas: see loader.early_read
    from loader.read import Sheet

#: Call fields a sheet may carry per row, in the API's order.
ROW_FIELDS = (
    "to_number",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "carry_over",
    "number_of_retries",
    "gap_between_retries",
    "priority",
)
#: Fields the run sets for every row; a column for them is a mistake we explain.
RUN_FIELDS = ("agent_id", "batch_id", "metadata")
#: Columns the loader appends to the results file.
RESULT_COLUMNS = ("source_row", "callkaro_status", "callkaro_call_id", "callkaro_message")

#: Headers of the phone column besides ``to_number``, in input sheets and do-not-call lists alike:
#: common names, the ones CRM exports use, and Hindi ones (with and without the nukta of फ़).
PHONE_ALIASES = (
    "phone",
    "phone number",
    "mobile",
    "mobile number",
    "number",
    "contact number",
    "msisdn",
    "telephone",
    "mobile no",
    "phone no",
    "contact no",
    "cell",
    "mob",
    "whatsapp number",
    "मोबाइल",
    "मोबाइल नंबर",
    "मोबाइल नं",
    "फ़ोन",
    "फोन",
    "फ़ोन नंबर",
    "फोन नंबर",
    "संपर्क नंबर",
)


def header_key(header: str) -> str:
    """The form headers are compared in: ``To Number`` and ``TO_NUMBER`` both give ``tonumber``.

    NFC first, so that फ़ typed as one character or as फ and a nukta compare equal.
    """
    text = unicodedata.normalize("NFC", header.strip().lstrip("\ufeff"))
    return re.sub(r"[\s_\-.]+", "", text).casefold()


_FIELD_BY_KEY = {header_key(f): f for f in ROW_FIELDS}
_FIELD_BY_KEY.update({header_key(a): "to_number" for a in PHONE_ALIASES})
_RUN_FIELD_BY_KEY = {header_key(f): f for f in RUN_FIELDS}
_RESULT_KEYS = {header_key(c) for c in RESULT_COLUMNS}


@dataclass(frozen=True)
class ColumnMap:
    """Which sheet column (by position) feeds which call field or metadata key."""

    fields: dict[str, int]
    metadata: list[tuple[str, int]]
    ignored: list[int] = field(default_factory=list)


def parse_map_options(options: Iterable[str]) -> dict[str, str]:
    """``["Mobile No=to_number"]`` -> ``{"Mobile No": "to_number"}``; bad forms are usage errors."""
    mapping: dict[str, str] = {}
    for option in options:
        header, sep, target = option.rpartition("=")
        header, target = header.strip(), target.strip()
        if not sep or not header or not target:
            raise UsageError(f'--map "{option}" is not of the form "HEADER=FIELD"')
        if target not in ROW_FIELDS:
            raise UsageError(
                f'--map "{option}": {target!r} is not a call field; use one of {", ".join(ROW_FIELDS)}'
            )
        mapping[header] = target
    return mapping


def phone_columns(headers: Sequence[str], overrides: Mapping[str, str] | None = None) -> list[int]:
    """Positions of every column that may hold a phone number: headed ``to_number`` or a phone alias,
    or mapped to ``to_number`` by ``--map``. A do-not-call list reads them all."""
    mapped = {header_key(h) for h, f in (overrides or {}).items() if f == "to_number"}
    return [
        position
        for position, header in enumerate(headers)
        if _FIELD_BY_KEY.get(header_key(header)) == "to_number" or header_key(header) in mapped
    ]


def map_columns(
    sheet: Sheet, overrides: dict[str, str] | None = None, *, elsewhere: Collection[str] = ()
) -> ColumnMap:
    """Assign each column of ``sheet`` to a call field or a metadata key.

    ``elsewhere`` are headers of the run's do-not-call lists: a ``--map`` entry
    naming one of them and no column of this sheet is for a list, not a mistake.
    """
    overrides = overrides or {}
    if elsewhere:
        here = {header_key(h) for h in sheet.headers}
        there = {header_key(h) for h in elsewhere}
        overrides = {
            h: f for h, f in overrides.items() if header_key(h) in here or header_key(h) not in there
        }
        _refuse_a_list_map_that_moves_the_phone(sheet, overrides, there)
    headers = sheet.headers
    _check_overrides_exist(sheet, overrides)

    claims: dict[str, list[int]] = {}
    metadata: list[tuple[str, int]] = []
    ignored: list[int] = []
    override_keys = {header_key(h): f for h, f in overrides.items()}
    for position, header in enumerate(headers):
        key = header_key(header)
        if key in override_keys:
            claims.setdefault(override_keys[key], []).append(position)
        elif key in _FIELD_BY_KEY and _FIELD_BY_KEY[key] not in overrides.values():
            claims.setdefault(_FIELD_BY_KEY[key], []).append(position)
        elif key in _RUN_FIELD_BY_KEY:
            name = _RUN_FIELD_BY_KEY[key]
            flag = "" if name == "metadata" else ", or use --" + name.replace("_", "-")
            raise ColumnError(
                sheet.path,
                f"column {header!r} would set {name} per row, but {name} is set for the whole run",
                hint="Rename the column if it is information for the agent (it then goes into "
                f"metadata){flag}.",
            )
        elif key in _RESULT_KEYS:
            ignored.append(position)
        else:
            metadata.append((header or _column_letter_name(position), position))

    for name, positions in claims.items():
        if len(positions) > 1:
            listed = " and ".join(repr(headers[p]) for p in positions)
            raise ColumnError(
                sheet.path,
                f"columns {listed} both look like {name}",
                hint=f'Say which one to use, e.g. --map "{headers[positions[0]]}={name}", '
                "or rename the other.",
            )
    if "to_number" not in claims:
        named = [h for h in headers if h]
        shown = ", ".join(repr(h) for h in named)
        hint = 'Name it "to_number" or "phone", or point at it with --map "HEADER=to_number".'
        if len(named) < 2:
            # One header is usually a title above the real header row.
            hint = (
                f"If the column headers are below row {sheet.header_row}, say which row holds them "
                "with --header-row N. " + hint
            )
        raise ColumnError(sheet.path, f"no phone number column (headers: {shown})", hint=hint)
    _check_metadata_keys(sheet, metadata)
    return ColumnMap(
        fields={name: positions[0] for name, positions in claims.items()},
        metadata=metadata,
        ignored=ignored,
    )


def _refuse_a_list_map_that_moves_the_phone(
    sheet: Sheet, overrides: Mapping[str, str], list_keys: Collection[str]
) -> None:
    """Refuse a ``--map "H=to_number"`` naming a column of both this sheet and a do-not-call list when
    the sheet has its own phone column: meant for the list (its error's hint suggests it), it would
    silently make the run call ``H`` instead of that column."""
    for mapped, target in overrides.items():
        if target != "to_number" or header_key(mapped) not in list_keys:
            continue
        own = [
            h
            for h in sheet.headers
            if _FIELD_BY_KEY.get(header_key(h)) == "to_number" and header_key(h) != header_key(mapped)
        ]
        if own:
            raise ColumnError(
                sheet.path,
                f'--map "{mapped}=to_number" names a column of this sheet and of a do-not-call list: '
                f"here it would call {mapped!r} instead of {own[0]!r}",
                hint=f'To read the list\'s {mapped!r} only, rename that column of the list "Mobile" '
                f"(every phone header of a list is read) and drop the --map; to call {mapped!r} on "
                f"purpose, rename {own[0]!r} in this sheet.",
            )


def _check_overrides_exist(sheet: Sheet, overrides: dict[str, str]) -> None:
    keys = {header_key(h) for h in sheet.headers}
    for header in overrides:
        if header_key(header) not in keys:
            shown = ", ".join(repr(h) for h in sheet.headers if h)
            raise ColumnError(
                sheet.path, f"--map names column {header!r}, which is not in the header row ({shown})"
            )
    targets = list(overrides.values())
    for target in set(targets):
        if targets.count(target) > 1:
            raise UsageError(f"--map gives {target} more than one column")


def _check_metadata_keys(sheet: Sheet, metadata: Sequence[tuple[str, int]]) -> None:
    seen: dict[str, str] = {}
    for name, _ in metadata:
        if name in seen:
            raise ColumnError(
                sheet.path,
                f"two columns are headed {name!r}; metadata keys must be unique",
                hint="Rename one of them.",
            )
        seen[name] = name


def _column_letter_name(position: int) -> str:
    """A header for a column the sheet left unnamed: ``column F``, as Excel shows it."""
    letters = ""
    n = position + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return f"column {letters}"
