"""The API key: where it comes from, and a type that never shows it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    """The key from ``CALLKARO_API_KEY``, else from ``.env`` in ``cwd``; None when neither has it."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR, "").strip()
    if not value:
        env_file = (cwd or Path.cwd()) / ".env"
        if env_file.is_file():
            from dotenv import dotenv_values

            value = (dotenv_values(env_file).get(ENV_VAR) or "").strip()
    return ApiKey(value) if value else None
