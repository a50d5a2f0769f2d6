"""The API key: where it comes from, and a type that never shows it."""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loader.errors import LoaderError, UsageError

ENV_VAR = "CALLKARO_API_KEY"


class ApiKey:
    """The CallKaro API key; its ``repr`` and ``str`` are masked, so it cannot leak into
    logs, tracebacks or messages by accident. ``reveal()`` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

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
    return dotenv_values(stream=io.StringIO(text))


_SAVE_AS = "In Notepad: Save As, Encoding: UTF-8. Or set CALLKARO_API_KEY in the environment instead."
