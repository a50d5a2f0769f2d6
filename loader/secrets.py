"""The API key: where it comes from, a type that never shows it, and ``mask``, which hides it.

``mask`` is the one place that decides what counts as the key in a text. Every text that
comes from the API (messages, errors, ids) goes through it in ``loader.client`` before it
can reach the state, the results, ``--log-file``, ``--summary-json`` or the screen; the log
masks its lines once more. It hides the key in every form a buggy server may echo that a
person would still recognise as the key:

- in any letter case (``SK-LIVE-...``, ``sk-live-...``);
- base64 (standard or URL-safe, padded or not, from any byte alignment) and URL-encoded;
- any run of ``MIN_RUN`` or more consecutive characters of the key, in any of those forms:
  a prefix, a suffix or the middle of it;
- letter-spaced: its characters one apart, with one separator between each (``s k - l i``,
  ``s.k.-.l.i``).

What it cannot see is a key transformed beyond recognition (hashed, encrypted, reversed, cut
into runs shorter than ``MIN_RUN``): SECURITY.md says so.
"""

from __future__ import annotations

import base64
import codecs
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from loader.errors import LoaderError, UsageError

ENV_VAR = "CALLKARO_API_KEY"
MASK = "********"
#: The shortest run of the key's characters hidden on its own. Eight is as long as the prefixes
#: keys are recognised by (``sk-live-``) and long enough not to hide ordinary words: for a
#: 40-character random key, an 8-character window of other text matches one of its runs by
#: chance about once in 10^8 (hex) to 10^13 (base64) windows, while a shorter run would start to
#: hide words a key happens to share with messages ("-live-", "test").
MIN_RUN = 8
# Characters written one apart with the same single separator (space, dot, dash...) between them.
_SPACED = re.compile(r"\S(?P<sep>[^\w]|_)(?:\S(?P=sep))+\S")


class ApiKey:
    """The CallKaro API key; its ``repr`` and ``str`` are masked, so it cannot leak into
    logs, tracebacks or messages by accident. ``reveal()`` is the one way to read it."""

    __slots__ = ("_pattern", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._pattern: _Pattern | None = None  # what ``mask`` looks for, worked out once

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("an ApiKey cannot be pickled")

    def mask(self, text: str) -> str:
        """``text`` with every recognisable form of the key replaced by ``********``."""
        return mask(text, self)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds the key in a form ``mask`` hides."""
        return mask(text, self) != text


def mask(text: str, api_key: ApiKey | None) -> str:
    """``text`` without the key in any form a person would recognise (see the module's docstring)."""
    if api_key is None or not text or not (secret := api_key.reveal()):
        return text
    pattern = api_key._pattern
    if pattern is None:
        pattern = api_key._pattern = _pattern_of(secret)
    folded = _fold(text)
    spans = _run_spans(folded, pattern)
    for spaced in _SPACED.finditer(folded):
        if spaced.end() - spaced.start() < 2 * pattern.run - 1:
            continue  # fewer letters than a run
        letters = spaced[0][::2]  # one character, one separator
        for start, end in _run_spans(letters, pattern):
            spans.append((spaced.start() + 2 * start, spaced.start() + 2 * end - 1))
    return _replace(text, spans) if spans else text


@dataclass(frozen=True)
class _Pattern:
    """What ``mask`` looks for, worked out once per key: every ``run``-character piece of its
    forms, and every ``block``-character piece, which finds the places worth a closer look."""

    run: int
    runs: frozenset[str]
    block: int
    blocks: frozenset[str]


def _pattern_of(secret: str) -> _Pattern:
    # A key shorter than a run (no real key is) is hidden whole, in any case, and only so: its
    # encodings' pieces would be a letter or two, found in every word.
    run = min(MIN_RUN, len(secret))
    runs = _runs(_forms(secret) if len(secret) >= MIN_RUN else [secret], run)
    # Any ``run`` characters in a row hold a whole block starting at a multiple of ``block``
    # (as run >= 2 * block - 1): a text is looked at one block in ``block``, and closely only
    # around a block that is part of the key.
    block = max(1, run // 2)
    blocks = frozenset(piece[i : i + block] for piece in runs for i in range(run - block + 1))
    return _Pattern(run, runs, block, blocks)


def _run_spans(folded: str, pattern: _Pattern) -> list[tuple[int, int]]:
    """The ``(start, end)`` of every run of the key's characters in ``folded``."""
    run, block = pattern.run, pattern.block
    starts: set[int] = set()
    for at in range(0, len(folded) - block + 1, block):
        if folded[at : at + block] in pattern.blocks:
            # The runs that hold this block start at most run - block characters before it.
            for start in range(max(0, at - run + block), min(at, len(folded) - run) + 1):
                if folded[start : start + run] in pattern.runs:
                    starts.add(start)
    return [(start, start + run) for start in sorted(starts)]


def _forms(secret: str) -> list[str]:
    """The key as written, base64-encoded from each byte alignment, and URL-encoded."""
    raw = secret.encode("utf-8")
    forms = [secret, quote(secret, safe=""), quote_plus(secret)]
    for skip in range(3):
        # Inside a longer encoded text the key starts at any byte of a 3-byte group: from its
        # 1st, 2nd or 3rd byte on, its encoding is one of these (the last character or two,
        # shared with the bytes after it, may differ; the runs before them are enough).
        encoded = base64.b64encode(raw[skip:]).decode("ascii")
        forms += [encoded, encoded.translate(_URLSAFE)]
    return forms


_URLSAFE = str.maketrans("+/", "-_")


def _runs(forms: Iterable[str], length: int) -> frozenset[str]:
    folded = [_fold(form) for form in forms]
    return frozenset(f[i : i + length] for f in folded for i in range(len(f) - length + 1))


def _fold(text: str) -> str:
    """``text`` lower-cased, one character for one (so positions still match ``text``)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """Each stretch of ``text`` the spans cover (overlapping or touching) becomes one ``********``."""
    parts: list[str] = []
    done = 0  # everything before this is copied or hidden
    for start, end in sorted(spans):
        if start > done:
            parts += [text[done:start], MASK]
        elif not parts:
            parts.append(MASK)  # a span at the very start
        done = max(done, end)  # a span overlapping or touching the last one is part of its mask
    parts.append(text[done:])
    return "".join(parts)


def load_api_key(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> ApiKey | None:
    """The key from ``CALLKARO_API_KEY``, else from ``.env`` in ``cwd``; None when neither has it.

    A key that could not be sent as an HTTP header (``check_key``), or a ``.env`` that cannot be
    read as UTF-8 text, is a ``UsageError`` naming where it came from and never showing the key.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR, "").strip()
    where = f"{ENV_VAR} in the environment"
    if not value:
        env_file = (cwd or Path.cwd()) / ".env"
        if not env_file.exists() or env_file.is_dir():
            return None  # a folder named .env is usually a virtualenv: not ours to read
        value = (_read_dotenv(env_file).get(ENV_VAR) or "").strip()
        where = f"{ENV_VAR} in {env_file}"
    if not value:
        return None
    check_key(value, where)
    return ApiKey(value)


_CURLY_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb"


def check_key(value: str, where: str) -> None:
    """Refuse a key that is not printable ASCII, the only thing an HTTP header value can safely be.

    Says what kind of character is wrong and where (its position), never the key itself.
    """
    for position, char in enumerate(value, start=1):
        if "!" <= char <= "~":
            continue
        if char in _CURLY_QUOTES:
            kind = "a curly quote (as word processors type them); use straight quotes or none"
        elif char.isspace() or not char.isprintable():
            kind = "a control character or space (a line break, tab or NUL); the key is one word"
        else:
            kind = "a character that is not printable ASCII; API keys are plain letters and digits"
        raise UsageError(
            f"{where} is not a usable API key: character {position} is {kind}",
            hint="Copy the key again from your CallKaro dashboard.",
        )


def _read_dotenv(env_file: Path) -> dict[str, str | None]:
    """``.env``'s settings; one-line errors for a file that is not small UTF-8 text."""
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    from loader.files import read_regular
    from loader.limits import MAX_SETTINGS_BYTES

    try:
        raw = read_regular(env_file, MAX_SETTINGS_BYTES, what="1 MiB; a .env file holds a few lines")
    except LoaderError as exc:
        raise UsageError(str(exc), hint="Put CALLKARO_API_KEY=... in .env as a small text file.") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UsageError(f"{env_file} is saved as UTF-16; save it as UTF-8 text", hint=_SAVE_AS)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{env_file} is not UTF-8 text (byte {exc.start + 1} does not fit); save it as UTF-8",
            hint=_SAVE_AS,
        ) from None
    bindings = list(parse_stream(io.StringIO(text)))
    for binding in bindings:
        if binding.error and ENV_VAR in binding.original.string:
            # The line itself is never shown: it holds the key.
            raise UsageError(
                f"{env_file} line {binding.original.line}: {ENV_VAR} cannot be read "
                "(a quote that is not closed?)",
                hint="Write it as CALLKARO_API_KEY=the-key, with straight quotes around it or none.",
            )
    # Lines dotenv cannot parse are left out, so that it prints no warning of its own to stderr.
    readable = "".join(binding.original.string for binding in bindings if not binding.error)
    return dotenv_values(stream=io.StringIO(readable))


_SAVE_AS = "In Notepad: Save As, Encoding: UTF-8. Or set CALLKARO_API_KEY in the environment instead."
