"""Which numbers one do-not-call list entry holds: all of them, or why it cannot be read; never some.

A list entry is what a person typed or a CRM exported, so it is read in every
way it may have been meant, and every reading that is a valid number is on
the list (where an entry could be either of two numbers, both are kept from
being called):

- text or an Excel number cell; ``9876543210.0`` (a float export) is
  ``9876543210``; ``9.19876543210E+11`` is a number whose digits all survived,
  while ``9.19877E+11`` lost some and is refused;
- with ``--default-region``, a number without ``+`` is read as a national
  number, as digits after a country code that lost its ``+``
  (``919820177889``), and, when it starts with one ``0``, as ``0`` and a country
  code (``091 98201 77889``); a number cell is also read with the leading ``0``
  Excel may have dropped;
- an extension (``x123``, ``ext. 12``, ``#12``) is left off: the number is
  matched without it;
- several numbers in one entry (``9000011122, 9000011123``, ``... or ...``)
  are all read, and ``9000011122/23`` is ``9000011122`` and ``9000011123``;
  otherwise ``phonenumbers.PhoneNumberMatcher`` must find numbers covering
  every digit of the entry.

An entry without digits (``N/A``, ``-``) names no number and is skipped; an
entry with digits that none of this reads is a problem, and a list with a
problem is refused by ``loader.suppress``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import phonenumbers

from loader.cells import Cell, cell_text, is_blank
from loader.phones import MANGLED, parse_phone, parse_phone_column

_DIGIT = re.compile(r"\d")
_NON_DIGITS = re.compile(r"\D")
#: An extension at the end of a number; the number is matched without it.
_EXTENSION = re.compile(r"\s*(?:(?:ext(?:ension|n)?|x)\.?|#)\s*:?\s*\d{1,7}\s*$", re.IGNORECASE)
#: A whole number exported as a float (pandas writes ``9876543210.0``).
_FLOAT_EXPORT = re.compile(r"^\s*(\+?\d+)\.0+\s*$")
#: ``9.19876543210E+11``: a mantissa and a positive exponent.
_SCIENTIFIC = re.compile(r"^\s*(\+?)(\d)(?:[.,](\d+))?[eE]\+?(\d{1,2})\s*$")
#: One number written with the punctuation phone numbers are written with.
_ONE_NUMBER = re.compile(r"^\s*\+?[\d\s()\-./]*\d[\d\s()\-./]*$")
#: Between two numbers of one entry.
_BETWEEN = re.compile(r"\s*(?:[,;|&\n]|\bor\b|\band\b)\s*|\s*/\s*", re.IGNORECASE)
_SLASH = re.compile(r"\s*/\s*")


@dataclass(frozen=True)
class EntryNumbers:
    """The numbers (E.164) an entry holds, or the problem that refuses it (then no numbers)."""

    numbers: frozenset[str]
    problem: str | None = None


_NOTHING = EntryNumbers(frozenset())


def read_entries(cells: Sequence[Cell], default_region: str | None) -> list[EntryNumbers]:
    """What each list cell holds, in order.

    Every reading of every entry is decided in one ``parse_phone_column`` call
    (a list of a hundred thousand numbers is read in seconds); only entries
    none of those readings fits go through ``PhoneNumberMatcher``.
    """
    plans = [_plan(cell, default_region) for cell in cells]
    texts = sorted(
        {text for plan in plans if isinstance(plan, list) for way in plan for p in way for text in p}
    )
    found, _ = parse_phone_column(pd.Series(texts, dtype=object), default_region)
    valid = {
        text: e164
        for text, e164 in zip(texts, pd.Series(found).tolist(), strict=True)
        if isinstance(e164, str)
    }
    return [
        plan if isinstance(plan, EntryNumbers) else _decide(cell, plan, valid, default_region)
        for cell, plan in zip(cells, plans, strict=True)
    ]


#: An entry's ways of being read: each way is its pieces, each piece the texts it may stand for.
_Plan = list[list[list[str]]]


def _plan(cell: Cell, region: str | None) -> _Plan | EntryNumbers:
    """The readings to try for ``cell``, or its answer when no parsing is needed."""
    if is_blank(cell) or isinstance(cell, bool):
        return _NOTHING
    if isinstance(cell, int | float):
        if (isinstance(cell, float) and not cell.is_integer()) or cell <= 0:
            return EntryNumbers(frozenset(), "is a number that is not a whole positive number")
        return [[_digit_readings(str(int(cell)), region, number_cell=True)]]
    if isinstance(cell, dt.date | dt.time | dt.timedelta):
        return EntryNumbers(frozenset(), "is a date or time, not a phone number")
    text = cell_text(cell).strip()
    if text.isascii() and text.isdigit():
        return [[_digit_readings(text, region)]]  # most entries: nothing else to look for
    if not _DIGIT.search(text):
        return _NOTHING  # N/A, -, none: no number is named
    written_out = _unexported(text)
    if written_out is None:
        return EntryNumbers(frozenset(), MANGLED)
    text = written_out
    ways: _Plan = []
    whole = _readings(text, region)
    if whole:
        ways.append([whole])
    pieces = [p for p in _BETWEEN.split(text) if p.strip()]
    if len(pieces) > 1:
        ways.append(_several(text, region))
    return ways


def _unexported(text: str) -> str | None:
    """``text`` with a float export or a full scientific notation written out; None when digits were lost."""
    exported = _FLOAT_EXPORT.match(text)
    if exported:
        return exported[1]
    scientific = _SCIENTIFIC.match(text)
    if not scientific:
        return text
    plus, first, decimals, exponent = scientific[1], scientific[2], scientific[3] or "", int(scientific[4])
    # Every digit survived only when the exponent uses up exactly the digits after the point.
    return plus + first + decimals if len(decimals) == exponent else None


def _readings(text: str, region: str | None, *, number_cell: bool = False) -> list[str]:
    """The texts one written number may stand for (to be parsed with ``region``); [] when it is not
    written as one number."""
    text = _EXTENSION.sub("", text)
    if not _ONE_NUMBER.match(text):
        return []
    digits = _NON_DIGITS.sub("", text)
    if text.strip().lstrip("(").strip().startswith("+"):
        return ["+" + digits]
    return _digit_readings(digits, region, number_cell=number_cell)


def _digit_readings(digits: str, region: str | None, *, number_cell: bool = False) -> list[str]:
    """``_readings`` of a number written without ``+``, as its digits."""
    if digits.startswith("00"):
        return ["+" + digits[2:], digits]
    if region is None:
        return [digits]  # refused by parse_phone as having no country code
    found = [digits, "+" + digits]
    if digits.startswith("0"):
        found.append("+" + digits[1:])  # 0 and a country code: 091 98201 77889
    if number_cell:
        found.append("0" + digits)  # a leading 0 Excel dropped
    return found


def _several(text: str, region: str | None) -> list[list[str]]:
    """The pieces of an entry holding several numbers; after a ``/``, a short piece ends the one
    before it (``9000011122/23``: ``...22`` and ``...23``)."""
    pieces: list[list[str]] = []
    previous = ""
    for part in _split_keeping_slashes(text):
        slashed, piece = part
        own = _readings(piece, region)
        digits = _NON_DIGITS.sub("", _EXTENSION.sub("", piece))
        if slashed and previous and digits and len(digits) < len(previous) and _ONE_NUMBER.match(piece):
            own = own + _readings(previous[: -len(digits)] + digits, region)
        pieces.append(own)
        if not previous or len(digits) >= len(previous):
            previous = digits  # a number written in full: what a short piece after it ends
    return pieces


def _split_keeping_slashes(text: str) -> list[tuple[bool, str]]:
    """The pieces of ``text`` between separators, each with whether a ``/`` came before it."""
    parts: list[tuple[bool, str]] = []
    position = 0
    slashed = False
    for found in _BETWEEN.finditer(text):
        piece = text[position : found.start()]
        if piece.strip():
            parts.append((slashed, piece))
        slashed = _SLASH.fullmatch(found[0]) is not None
        position = found.end()
    if text[position:].strip():
        parts.append((slashed, text[position:]))
    return parts


def _decide(cell: Cell, ways: _Plan, valid: dict[str, str], region: str | None) -> EntryNumbers:
    """The union of every way of reading the entry in which each piece is a valid number."""
    numbers: set[str] = set()
    for way in ways:
        read = [{valid[t] for t in piece if t in valid} for piece in way]
        if read and all(read):
            numbers.update(*read)
    if not numbers:
        numbers = _matched(cell_text(cell), region)
    if numbers:
        return EntryNumbers(frozenset(numbers))
    return EntryNumbers(frozenset(), _problem(cell, ways, region))


def _matched(text: str, region: str | None) -> set[str]:
    """Numbers ``PhoneNumberMatcher`` finds in ``text`` when together they cover every digit of it."""
    covered = [False] * len(text)
    numbers: set[str] = set()
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        numbers.add(phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164))
        covered[match.start : match.end] = [True] * (match.end - match.start)
    if any(ch.isdigit() and not covered[i] for i, ch in enumerate(text)):
        return set()  # some digits are not part of any number found: the entry is not fully read
    return numbers


def _problem(cell: Cell, ways: _Plan, region: str | None) -> str:
    """Why an entry with digits holds no number, in ``parse_phone``'s words where it has them."""
    several = [way for way in ways if len(way) > 1]
    if several:
        return "does not read as one or more phone numbers; write each number in full, one per row"
    found, problem = parse_phone(cell, region)
    if problem is not None and found is None:
        return problem
    return "does not read as a phone number"
