"""Phone numbers, a whole column at a time, with the same answers as ``phonenumbers``.

``parse_phone`` is the definition: one cell through ``phonenumbers.parse``,
``is_valid_number`` and the E.164 format, ``(e164, None)`` or ``(None,
problem)``. It costs about 40 microseconds a number, which is 40 seconds
for a million-row sheet.

``parse_phone_column`` gives the same answer for every cell of a column, far
faster:

1. each distinct cell is looked at once;
2. whole columns are cleaned with vectorised string operations: a cell made
   of digits, spaces, ``-``, ``.``, ``/``, brackets and one leading ``+`` (or
   ``00``) is, for ``phonenumbers``, just a digit string written
   internationally or nationally, so only ``(international, digits)`` matters
   and cells that differ only in punctuation are decided once;
3. each such digit string is decided with ``phonenumbers``' own per-country
   metadata (country code, international and national prefixes, the general
   and per-type number patterns and lengths), compiled once per country into
   a few regular expressions: the same steps ``parse`` and
   ``is_valid_number`` take, without building objects or recompiling;
4. anything the fast path cannot decide with certainty (other characters,
   fewer than three digits, a national number starting with the region's
   international prefix, every case where ``parse`` itself would raise) goes
   through ``parse_phone``.

``tests/test_phones.py`` proves the two paths agree on the test fixtures and
on generated numbers from many regions, written in many ways.
"""

from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from loader.cells import WHITESPACE, Cell, arrow_text, cell_types, distinct_cells, is_blank, of_type

Parsed = tuple[Any, str | None]

# --- the reference: one cell at a time ------------------------------------------------

_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
#: Why a number Excel showed in scientific notation (``9.19877E+11``) cannot be read.
MANGLED = (
    "was mangled by a spreadsheet into scientific notation, so its digits are lost; "
    "format the column as text and type the number again"
)
_PHONE_CHARS = re.compile(r"^[\d\s()+\-./]+$")
_NOT_A_PHONE = "is not a phone number"


def _cell_as_text(cell: Cell) -> str | None:
    """The text ``phonenumbers`` is given for a cell, or None when the cell is no number at all."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, float):
        if not cell.is_integer() or cell <= 0:
            return None
        return str(int(cell))
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, str):
        return cell.strip()
    return None


def parse_phone(cell: Cell, default_region: str | None) -> Parsed:
    """One cell as E.164, or the problem with it: the reference every faster path must equal."""
    text = _cell_as_text(cell)
    if text is None:
        return None, _NOT_A_PHONE
    if default_region and not isinstance(cell, str):
        found = _number_cell_phone(text, default_region)
        if found is not None:
            return found
    if _SCIENTIFIC.match(text):
        return None, MANGLED
    if not _PHONE_CHARS.match(text):
        return None, "is not a phone number (only digits, spaces, +, -, brackets and dots are allowed)"
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            if default_region is None and not text.startswith("+"):
                return (
                    None,
                    "has no country code; write it as +<country code><number> or use --default-region",
                )
            return None, "has a country code that does not exist"
        return None, _NOT_A_PHONE
    if not phonenumbers.is_valid_number(number):
        # A number that is not valid may match no region; its country code still names one.
        region = phonenumbers.region_code_for_number(number) or phonenumbers.region_code_for_country_code(
            number.country_code or 0
        )
        return None, _not_valid(region)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def _valid_e164(text: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _number_cell_phone(digits: str, region: str) -> Parsed | None:
    """A phone number stored as a number: its digits, or its digits after a leading 0 it lost.

    A number cell cannot hold a leading zero. Where the zero is only the
    trunk prefix (India: 098450... and 98450... are the same number) both
    readings agree; where it is part of the number (Italy's landlines),
    only one reading is valid, and that one is used. ``None`` leaves the
    cell to the usual parsing and its messages.
    """
    return _choose_reading(_valid_e164(digits, region), _valid_e164("0" + digits, region))


def _choose_reading(as_written: str | None, with_zero: str | None) -> Parsed | None:
    """A number cell's answer from its two readings (E.164 where valid): when both are valid and
    differ, the cell is refused rather than guessed; None when neither is valid."""
    if as_written and with_zero and as_written != with_zero:
        return None, (
            f"was stored as a number, so a leading 0 may have been lost: it could be {as_written} or "
            f"{with_zero}; format the column as text and type the number again"
        )
    found = as_written or with_zero
    return (found, None) if found else None


#: How every problem of a well-formed number that is not valid for its country begins.
NOT_VALID = "is not a valid phone number"


def _not_valid(region: str | None) -> str:
    where = f" for {region}" if region and region != "ZZ" else ""
    return f"{NOT_VALID}{where}"


# --- each country's rules, compiled once ------------------------------------------------------

#: ``phonenumbers``' limits (phonenumberutil: _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN, ...).
_MIN_NSN = 2
_MAX_NSN = 17
_MAX_INPUT = 250
_MAX_COUNTRY_CODE = 3
_NON_GEO = "001"
#: The number types ``is_valid_number`` accepts, in the order it tries them.
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


class _Length(Enum):
    """``phonenumbers``' ValidationResult, as far as parsing looks at it."""

    POSSIBLE = 0
    LOCAL_ONLY = 1
    TOO_SHORT = 2
    INVALID = 3
    TOO_LONG = 4


@dataclass(frozen=True)
class _Rules:
    """One region's metadata, as the patterns and numbers parsing and validation use."""

    country_code: int
    international_prefix: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    national_prefix_groups: int
    transform_rule: str | None
    general: re.Pattern[str] | None
    general_lengths: frozenset[int]
    possible_lengths: tuple[int, ...]
    local_lengths: frozenset[int]
    any_type: re.Pattern[str] | None
    leading_digits: re.Pattern[str] | None
    #: For whole columns: the general pattern, and each number type's (pattern, lengths or None),
    #: the most common types first (validity is "any type matches", so order does not matter).
    general_pattern: str | None = None
    type_patterns: tuple[tuple[str, frozenset[int] | None], ...] = ()
    #: False when the metadata has a shape this module does not follow (no general lengths).
    usable: bool = True

    def matches_general(self, digits: str) -> bool:
        """``_match_national_number(digits, general_desc)``: the pattern alone, lengths ignored."""
        return self.general is not None and self.general.fullmatch(digits) is not None

    def is_valid(self, nsn: str) -> bool:
        """``_number_type_helper(nsn) != UNKNOWN``: the general rule and at least one number type."""
        if self.general_lengths and len(nsn) not in self.general_lengths:
            return False
        return (
            self.matches_general(nsn)
            and self.any_type is not None
            and self.any_type.fullmatch(nsn) is not None
        )

    def length(self, digits: str) -> _Length:
        """``_test_number_length(digits, metadata)`` for an unknown number type."""
        lengths = self.possible_lengths
        actual = len(digits)
        if actual in self.local_lengths:
            return _Length.LOCAL_ONLY
        if lengths[0] == actual:
            return _Length.POSSIBLE
        if lengths[0] > actual:
            return _Length.TOO_SHORT
        if lengths[-1] < actual:
            return _Length.TOO_LONG
        return _Length.POSSIBLE if actual in lengths[1:] else _Length.INVALID

    def strip_national_prefix(self, digits: str) -> str:
        """``_maybe_strip_national_prefix_carrier_code(digits)[1]``: a trunk prefix such as 0, removed."""
        if not digits or self.national_prefix is None:
            return digits
        found = self.national_prefix.match(digits)
        if not found:
            return digits
        viable_before = self.matches_general(digits)
        groups = found.groups()
        if not self.transform_rule or groups[self.national_prefix_groups - 1] is None:
            rest = digits[found.end() :]
        else:
            rest = self.national_prefix.sub(self.transform_rule, digits, count=1)
        if viable_before and not self.matches_general(rest):
            return digits
        return rest


def _pattern(desc: Any) -> str | None:
    pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
    return pattern or None


def _type_branch(pattern: str, lengths: frozenset[int] | None) -> str:
    """One number type as a regex branch: its pattern, behind a look-ahead for its lengths."""
    if lengths is None:
        return f"(?:{pattern})"
    return "(?=(?:" + "|".join(rf"\d{{{n}}}" for n in sorted(lengths)) + rf")\Z)(?:{pattern})"


def _compile(metadata: Any) -> _Rules:
    general = metadata.general_desc
    types = [
        t
        for t in _TYPES
        if not (t == "mobile" and metadata.same_mobile_and_fixed_line_pattern)  # never consulted then
    ]
    type_patterns = []
    for kind in sorted(types, key=lambda t: t not in ("mobile", "fixed_line")):
        desc = getattr(metadata, kind, None)
        pattern = _pattern(desc)
        if desc is None or pattern is None:
            continue
        lengths = tuple(desc.possible_length or ())
        if -1 not in lengths:  # a type with no numbers at all
            type_patterns.append((pattern, frozenset(lengths) if lengths else None))
    branches = [_type_branch(pattern, lengths) for pattern, lengths in type_patterns]
    national_prefix = metadata.national_prefix_for_parsing or None
    prefix_re = re.compile(national_prefix) if national_prefix else None
    general_pattern = _pattern(general)
    return _Rules(
        country_code=int(metadata.country_code),
        international_prefix=re.compile(metadata.international_prefix)
        if metadata.international_prefix is not None
        else None,
        national_prefix=prefix_re,
        national_prefix_groups=prefix_re.groups if prefix_re is not None else 0,
        transform_rule=metadata.national_prefix_transform_rule or None,
        general=re.compile(general_pattern) if general_pattern else None,
        general_lengths=frozenset(general.possible_length or ()) if general is not None else frozenset(),
        possible_lengths=tuple(general.possible_length or ()) if general is not None else (),
        local_lengths=frozenset(general.possible_length_local_only or ())
        if general is not None
        else frozenset(),
        any_type=re.compile("|".join(branches)) if branches else None,
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        usable=general is not None and bool(general.possible_length),
        general_pattern=general_pattern,
        type_patterns=tuple(type_patterns),
    )


@functools.cache
def _region_rules(region: str) -> _Rules | None:
    metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
    return None if metadata is None else _compile(metadata)


@functools.cache
def _calling_code_rules(country_code: int, region: str) -> _Rules | None:
    """``PhoneMetadata.metadata_for_region_or_calling_code``, compiled."""
    if region == _NON_GEO:
        metadata = PhoneMetadata.metadata_for_nongeo_region(country_code, None)
        return None if metadata is None else _compile(metadata)
    return _region_rules(region)


# --- the fast decision --------------------------------------------------------------------


def _country_code(digits: str) -> tuple[int, str]:
    """``_extract_country_code``: (0, digits) when no calling code starts the digits."""
    if not digits or digits[0] == "0":
        return 0, digits
    for size in range(1, min(len(digits), _MAX_COUNTRY_CODE) + 1):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, digits[size:]
    return 0, digits


def _region_of(country_code: int, nsn: str) -> str | None:
    """``region_code_for_number``: which of the calling code's regions the number belongs to."""
    regions = COUNTRY_CODE_TO_REGION_CODE[country_code]
    if len(regions) == 1:
        return str(regions[0])
    for region in regions:
        rules = _region_rules(region)
        if rules is None:
            continue
        if rules.leading_digits is not None:
            if rules.leading_digits.match(nsn):
                return str(region)
        elif rules.is_valid(nsn):
            return str(region)
    return None


def decide(international: bool, digits: str, default_region: str | None) -> Parsed | None:
    """What ``parse_phone`` says of a number written as ``digits`` (after ``+`` when ``international``).

    ``None`` when this path cannot be sure; the caller then asks ``parse_phone``.
    Each step names the ``phonenumbers`` function it stands for.
    """
    default = _region_rules(default_region) if default_region else None
    if default is not None and not default.usable:
        return None
    if international:
        # _maybe_extract_country_code, number written with a plus sign
        if len(digits) <= _MIN_NSN:
            return None  # TOO_SHORT_AFTER_IDD
        country_code, nsn = _country_code(digits)
        if country_code == 0:
            return None  # INVALID_COUNTRY_CODE, and parse's second try without the plus
    else:
        if default is None:
            return None  # no region to read a national number with
        if default.international_prefix is not None and default.international_prefix.match(digits):
            return None  # written with this region's international prefix (011 from the US)
        country_code, nsn = 0, digits
        code_text = str(default.country_code)
        if digits.startswith(code_text):
            # The region's own calling code written without a plus: 919876543210 from India.
            rest = default.strip_national_prefix(digits[len(code_text) :])
            if (not default.matches_general(digits) and default.matches_general(rest)) or default.length(
                digits
            ) is _Length.TOO_LONG:
                country_code, nsn = default.country_code, rest
    # parse: the metadata the national prefix is stripped with
    rules: _Rules | None
    if country_code == 0:
        assert default is not None
        country_code, rules = default.country_code, default
    else:
        number_region = str(COUNTRY_CODE_TO_REGION_CODE[country_code][0])
        if number_region == default_region:
            rules = default
        else:
            rules = _calling_code_rules(country_code, number_region)
    if len(nsn) < _MIN_NSN:
        return None  # TOO_SHORT_NSN
    if rules is not None and not rules.usable:
        return None
    if rules is not None:
        stripped = rules.strip_national_prefix(nsn)
        if rules.length(stripped) not in (_Length.TOO_SHORT, _Length.LOCAL_ONLY, _Length.INVALID):
            nsn = stripped
    if not _MIN_NSN <= len(nsn) <= _MAX_NSN:
        return None  # TOO_SHORT_NSN / TOO_LONG
    # is_valid_number
    region = _region_of(country_code, nsn)
    if region is not None:
        valid_rules = _calling_code_rules(country_code, region)
        same_code = region == _NON_GEO or (
            valid_rules is not None and valid_rules.country_code == country_code
        )
        if valid_rules is not None and same_code and valid_rules.is_valid(nsn):
            return f"+{country_code}{nsn}", None
    return None, _not_valid(region or str(COUNTRY_CODE_TO_REGION_CODE[country_code][0]))


# --- whole columns ------------------------------------------------------------------------------

#: Cells the fast path reads: separators anywhere, one ``+`` before the first digit. Checked after
#: spaces are trimmed and a leading ``00`` became ``+``; ASCII only, so ``\d`` means 0-9.
_TAME = r"^[ ().\-/]*\+?[0-9 ().\-/]*$"


def _clean(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Which texts are tame, and each one's digits after a ``+`` if it had one (vectorised)."""
    double_zero = pc.fill_null(pc.starts_with(texts, "00"), False)
    text = pc.if_else(
        double_zero, pc.binary_join_element_wise("+", pc.utf8_slice_codeunits(texts, 2), ""), texts
    )
    tame = pc.and_(pc.match_substring_regex(text, _TAME), pc.less_equal(pc.utf8_length(text), _MAX_INPUT))
    digits = pc.replace_substring_regex(text, r"[^0-9+]", "")
    enough = pc.greater_equal(pc.utf8_length(pc.replace_substring(digits, "+", "")), 3)
    tame = pc.fill_null(pc.and_(tame, enough), False)
    return tame.to_numpy(zero_copy_only=False).astype(bool), pc.fill_null(digits, "")


def _regex(values: pa.Array, pattern: str, *, whole: bool) -> np.ndarray:
    """Which values match ``pattern`` (all of it, or a prefix), in C++ (RE2) where it can.

    For these patterns (digit classes, groups, alternations, counted repeats) the
    set of matching strings is the same in RE2 and Python's ``re``; a pattern RE2
    refuses is matched with ``re`` instead.
    """
    anchored = f"^(?:{pattern})$" if whole else f"^(?:{pattern})"
    try:
        found = pc.match_substring_regex(values, anchored)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        compiled = re.compile(pattern)
        test = compiled.fullmatch if whole else compiled.match
        return np.fromiter((test(v) is not None for v in values.to_pylist()), dtype=bool, count=len(values))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def _valid_many(rules: _Rules, nsns: pa.Array) -> np.ndarray:
    """``rules.is_valid`` of each national significant number, a whole array at a time."""
    count = len(nsns)
    if rules.general_pattern is None or count == 0:
        return np.zeros(count, dtype=bool)
    lengths = pc.utf8_length(nsns).to_numpy(zero_copy_only=False)
    candidates = np.ones(count, dtype=bool)
    if rules.general_lengths:
        candidates &= np.isin(lengths, list(rules.general_lengths))
    where = np.flatnonzero(candidates)
    if len(where):
        candidates[where] = _regex(nsns.take(where), rules.general_pattern, whole=True)
    valid = np.zeros(count, dtype=bool)
    for pattern, type_lengths in rules.type_patterns:
        open_ = candidates & ~valid
        if type_lengths is not None:
            open_ &= np.isin(lengths, list(type_lengths))
        where = np.flatnonzero(open_)
        if not len(where):
            continue
        valid[where] = _regex(nsns.take(where), pattern, whole=True)
    return valid


def _decide_many(keys: pa.Array, default_region: str | None) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``decide`` for many written numbers (``+`` then digits, or digits), whole groups at a time.

    The common cases are vectorised: an international number whose calling code
    belongs to one region, or a national number of the default region (also
    written with its calling code but no plus), without a national prefix to
    strip. The rest go through
    ``decide`` one by one. Returns the values, the problems, and which keys
    were decided (the others need ``parse_phone``).
    """
    count = len(keys)
    values = _Answers(count)
    problems = np.full(count, None, dtype=object)
    decided = np.zeros(count, dtype=bool)
    if not count:
        return values.array(), problems, decided
    international = pc.starts_with(keys, "+").to_numpy(zero_copy_only=False).astype(bool)
    digits = pc.utf8_ltrim(keys, "+")
    sizes = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
    one_by_one = np.ones(count, dtype=bool)
    # (rows, country code, their national numbers, rules to strip a national prefix with).
    groups: list[tuple[np.ndarray, int, pa.Array, _Rules | None]] = []

    international_rows = international & (sizes > _MIN_NSN)
    if international_rows.any():
        code_of = np.zeros(count, dtype=np.int64)
        for size in (3, 2, 1):  # calling codes are prefix-free: at most one size fits
            prefix = pc.utf8_slice_codeunits(digits, 0, size)
            hit = pc.is_in(prefix, value_set=_CODE_TEXTS[size]).to_numpy(zero_copy_only=False).astype(bool)
            hit &= international_rows & (code_of == 0)
            if hit.any():
                where = np.flatnonzero(hit)
                code_of[where] = pc.cast(prefix.take(where), pa.int64()).to_numpy(zero_copy_only=False)
        for code in np.unique(code_of[code_of > 0]).tolist():
            rows = np.flatnonzero(code_of == code)
            region = str(COUNTRY_CODE_TO_REGION_CODE[code][0])
            nsns = pc.utf8_slice_codeunits(digits.take(rows), len(str(code)))
            groups.append((rows, code, nsns, _calling_code_rules(code, region)))

    default = _region_rules(default_region) if default_region else None
    national_rows = ~international
    if default is not None and default.usable and national_rows.any():
        rows = np.flatnonzero(national_rows)
        subset = digits.take(rows)
        if default.international_prefix is not None:
            # Written with this region's international prefix (011 from the US): one by one.
            keep = ~_regex(subset, default.international_prefix.pattern, whole=False)
            rows, subset = rows[keep], subset.filter(pa.array(keep))
        code = default.country_code
        own_code = _regex(subset, str(code), whole=False)
        ordinary = np.flatnonzero(~own_code)
        groups.append((rows[ordinary], code, subset.take(ordinary), default))
        if own_code.any():
            # The region's own calling code written without a plus (919876543210 from India):
            # _maybe_extract_country_code keeps it as the calling code when the digits after it
            # look like a national number and the whole does not, or the whole is too long.
            where = np.flatnonzero(own_code)
            whole = subset.take(where)
            rest = pc.utf8_slice_codeunits(whole, len(str(code)))
            plain = np.ones(len(where), dtype=bool)
            if default.national_prefix is not None:
                plain = ~_regex(rest, default.national_prefix.pattern, whole=False)  # one by one
            if default.general_pattern is not None:
                general_whole = _regex(whole, default.general_pattern, whole=True)
                general_rest = _regex(rest, default.general_pattern, whole=True)
            else:
                general_whole = general_rest = np.zeros(len(where), dtype=bool)
            # Whether a number is too long depends only on its length: asked once per length.
            sizes, size_of = np.unique(
                pc.utf8_length(whole).to_numpy(zero_copy_only=False), return_inverse=True
            )
            too_long = np.array(
                [default.length("0" * n) is _Length.TOO_LONG for n in sizes.tolist()], dtype=bool
            )[size_of.reshape(-1)]
            takes_code = (~general_whole & general_rest) | too_long
            kept = np.flatnonzero(plain & takes_code)
            region = str(COUNTRY_CODE_TO_REGION_CODE[code][0])
            groups.append((rows[where[kept]], code, rest.take(kept), _calling_code_rules(code, region)))
            kept = np.flatnonzero(plain & ~takes_code)
            groups.append((rows[where[kept]], code, whole.take(kept), default))

    for rows, code, nsns, rules in groups:
        regions = COUNTRY_CODE_TO_REGION_CODE[code]
        if rules is None or not rules.usable or len(regions) != 1 or not len(rows):
            continue  # several regions share the code, or metadata this path does not follow
        lengths = pc.utf8_length(nsns).to_numpy(zero_copy_only=False)
        simple = (lengths >= _MIN_NSN) & (lengths <= _MAX_NSN)
        if rules.national_prefix is not None:
            # A number that may start with a national prefix goes the long way.
            simple &= ~_regex(nsns, rules.national_prefix.pattern, whole=False)
        region = str(regions[0])
        valid_rules = _calling_code_rules(code, region)
        if valid_rules is None or (region != _NON_GEO and valid_rules.country_code != code):
            continue
        keep = np.flatnonzero(simple)
        kept = nsns.take(keep)
        valid = _valid_many(valid_rules, kept)
        e164 = pc.binary_join_element_wise(f"+{code}", kept.filter(pa.array(valid)), "")
        positions = rows[keep]
        values.put(positions[valid], e164)
        problems[positions[~valid]] = _not_valid(region)
        decided[positions] = True
        one_by_one[positions] = False

    found: list[tuple[int, str]] = []
    for position in np.flatnonzero(one_by_one).tolist():
        key = keys[position].as_py()
        answer = decide(key.startswith("+"), key.lstrip("+"), default_region)
        if answer is not None:
            if answer[0] is not None:
                found.append((position, answer[0]))
            problems[position] = answer[1]
            decided[position] = True
    if found:
        at, texts = zip(*found, strict=True)
        values.put(np.array(at, dtype=np.int64), pa.array(texts, type=pa.string()))
    return values.array(), problems, decided


class _Answers:
    """Phone numbers found for positions ``0..count-1``, gathered as pyarrow text, never as
    a million Python strings; positions without one are null."""

    def __init__(self, count: int) -> None:
        self._source = np.full(count, -1, dtype=np.int64)
        self._pieces: list[pa.Array] = []
        self._size = 0

    def put(self, positions: np.ndarray, texts: pa.Array) -> None:
        self._source[positions] = np.arange(self._size, self._size + len(texts))
        self._pieces.append(texts.cast(pa.large_string()))
        self._size += len(texts)

    def array(self) -> pa.Array:
        pool = pa.concat_arrays(self._pieces) if self._pieces else pa.array([], type=pa.large_string())
        return pool.take(pa.array(self._source, mask=self._source < 0))


#: Every calling code as text, by its number of digits.
_CODE_TEXTS = {
    size: pa.array(
        sorted({str(c) for c in COUNTRY_CODE_TO_REGION_CODE if len(str(c)) == size}), type=pa.string()
    )
    for size in (1, 2, 3)
}


def parse_phone_column(cells: pd.Series, default_region: str | None) -> tuple[Any, np.ndarray]:
    """``parse_phone`` of every cell, in the column's order: the E.164 numbers as a compact
    ``str`` array (missing where there is none) and the problems (None where there is none).
    Blank cells give neither."""
    texts = arrow_text(cells)
    if texts is not None:
        return _parse_texts(texts.combine_chunks(), default_region)
    codes, distinct = distinct_cells(cells.to_numpy(dtype=object))
    count = len(distinct)
    objects = np.empty(count, dtype=object)
    objects[:] = distinct
    del distinct
    is_text = of_type(cell_types(objects), str)
    # Answers go by position into one Arrow column: a million of them never pass through Python.
    answers = _Answers(count)
    problems = np.full(count, None, dtype=object)
    done = np.zeros(count, dtype=bool)
    text_at = np.flatnonzero(is_text)
    if len(text_at):
        # Text cells of a column that also holds numbers (a workbook's): as a text column's.
        text_values, problems[text_at] = _decide_distinct(
            pa.array(objects[text_at], type=pa.large_string()), default_region
        )
        answers.put(text_at, text_values)
        done[text_at] = True
    # Number cells: parse_phone reads them in two ways only with a default region.
    number_at: list[int] = []
    digits: list[str] = []
    if default_region:
        for position in np.flatnonzero(~is_text).tolist():
            text = _cell_as_text(objects[position])
            if text:
                number_at.append(position)
                digits.append(text)
    written = _decide_list(digits, default_region)
    # A number cell may have lost a leading 0. Where 0 is the region's trunk prefix, putting
    # it back can only help a number that is not valid as written; elsewhere (Italy) both
    # readings are needed, as parse_phone takes them.
    trunk_zero = _national_prefix(str(default_region)) == "0"
    retry = [n for n, w in enumerate(written) if not (trunk_zero and w[2] and w[0])]
    zeroed = dict(zip(retry, _decide_list(["0" + digits[n] for n in retry], default_region), strict=True))
    found_at: list[int] = []
    found: list[str] = []
    for n, position in enumerate(number_at):
        reading = written[n]
        other = zeroed.get(n, (None, None, True))
        if reading[2] and other[2]:
            # _number_cell_phone's choice, else the usual parse of the digits as written.
            value, problems[position] = _choose_reading(reading[0], other[0]) or (reading[0], reading[1])
            if value is not None:
                found_at.append(position)
                found.append(value)
            done[position] = True
    for position in np.flatnonzero(~done).tolist():
        cell = objects[position]
        if not is_blank(cell):
            value, problems[position] = parse_phone(cell, default_region)
            if value is not None:
                found_at.append(position)
                found.append(value)
    if found_at:
        answers.put(np.array(found_at, dtype=np.int64), pa.array(found, type=pa.large_string()))
    return _spread(answers.array(), problems, codes)


#: Distinct texts decided together by the fast path, at most (the memory its columns take).
_SLICE_ROWS = 1 << 16
#: Slices decided at once. The work is mostly pyarrow kernels, which let go of the GIL.
_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
#: Fewer distinct texts than this per thread are decided in one go: a thread would cost more.
_MIN_THREAD_ROWS = 8_192


def _parse_texts(texts: pa.Array, default_region: str | None) -> tuple[Any, np.ndarray]:
    """``parse_phone_column`` of a compact text column, in pyarrow from start to end: a column of
    a million distinct numbers never becomes a million Python strings."""
    encoded = pc.dictionary_encode(texts)
    distinct = encoded.dictionary
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    values, problems = _decide_distinct(distinct, default_region)
    return _spread(values, problems, codes)


def _decide_distinct(distinct: pa.Array, default_region: str | None) -> tuple[pa.Array, np.ndarray]:
    """Numbers and problems of distinct texts (blank ones get neither).

    Decided a slice at a time, so that the intermediate columns of the fast
    path stay small however many distinct numbers the sheet has, and slices
    side by side in threads on a machine with more than one core.
    """
    # Trimmed as str.strip trims: what parse_phone looks at.
    trimmed = pc.utf8_trim(distinct, WHITESPACE)
    count = len(distinct)
    slices = max(-(-count // _SLICE_ROWS), min(_THREADS, count // _MIN_THREAD_ROWS), 1)
    size = -(-count // slices)
    starts = range(0, count, size) if count else range(0)

    def decide_slice(start: int) -> tuple[pa.Array, np.ndarray]:
        return _decide_slice(distinct.slice(start, size), trimmed.slice(start, size), default_region)

    if len(starts) > 1 and _THREADS > 1:
        with ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="callkaro-phones") as pool:
            answers = list(pool.map(decide_slice, starts))
    else:
        answers = [decide_slice(start) for start in starts]
    problems = np.full(count, None, dtype=object)
    for start, (_, piece_problems) in zip(starts, answers, strict=True):
        problems[start : start + len(piece_problems)] = piece_problems
    pieces = [piece_values for piece_values, _ in answers]
    values = pa.concat_arrays(pieces) if pieces else pa.array([], type=pa.large_string())
    return values, problems


def _decide_slice(
    texts: pa.Array, trimmed: pa.Array, default_region: str | None
) -> tuple[pa.Array, np.ndarray]:
    """Numbers and problems of distinct texts: the fast path, then ``parse_phone`` for the rest."""
    values, problems, done = _decide_texts(trimmed, default_region)
    blank = pc.equal(pc.utf8_length(trimmed), 0).to_numpy(zero_copy_only=False).astype(bool)
    left = ~done & ~blank
    if not left.any():
        return values, problems
    found: list[str | None] = []
    for position in np.flatnonzero(left).tolist():
        found_value, problems[position] = parse_phone(texts[position].as_py(), default_region)
        found.append(found_value)
    return pc.replace_with_mask(values, pa.array(left), pa.array(found, type=values.type)), problems


def _spread(values: pa.Array, problems: np.ndarray, codes: np.ndarray) -> tuple[Any, np.ndarray]:
    """Each distinct cell's answer spread back to the cells (code -1: a missing cell)."""
    missing = codes < 0
    index = pa.array(codes, mask=missing) if missing.any() else pa.array(codes)
    spread_values = pd.array(values.take(index), dtype="str")
    # The None appended is what code -1 picks.
    with_none = np.empty(len(problems) + 1, dtype=object)
    with_none[:-1] = problems
    with_none[-1] = None
    return spread_values, with_none[codes]


def _national_prefix(region: str) -> str | None:
    metadata = PhoneMetadata.metadata_for_region(region)
    return None if metadata is None else metadata.national_prefix


def _decide_texts(texts: pa.Array, default_region: str | None) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The fast path's number, problem and whether it decided, for each (trimmed) text."""
    count = len(texts)
    # 32-bit offsets, as the literals the kernels combine with have: phone texts are short.
    tame, written = _clean(texts.cast(pa.string()))
    positions = np.flatnonzero(tame)
    # Texts that differ only in punctuation are one number: decided once.
    encoded = pc.dictionary_encode(written.filter(pa.array(tame)))
    key_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    key_values, key_problems, key_done = _decide_many(encoded.dictionary, default_region)
    source = np.full(count, -1, dtype=np.int64)
    source[positions] = key_codes
    values = key_values.take(pa.array(source, mask=source < 0))
    problems = np.full(count, None, dtype=object)
    problems[positions] = key_problems[key_codes]
    done = np.zeros(count, dtype=bool)
    done[positions] = key_done[key_codes]
    return values, problems, done


def _decide_list(texts: list[str], default_region: str | None) -> list[tuple[Any, Any, bool]]:
    """``(value, problem, decided)`` for each text of a list, through the fast path."""
    if not texts:
        return []
    values, problems, done = _decide_texts(pa.array(texts, type=pa.large_string()), default_region)
    return list(zip(values.to_pylist(), problems.tolist(), done.tolist(), strict=True))
