"""``--config FILE.toml``: run options from a file, each key named as its flag with ``_`` for ``-``.

    agent_id = "6803fa770b65876868ddf"     # --agent-id
    default_region = "IN"                  # --default-region
    map = ["Mobile No=to_number"]          # --map, repeatable: a list
    suppress = ["dnc.csv"]                 # --suppress, repeatable: a list

Keys are exactly the fields of ``loader.options.RunOptions``. An unknown key,
or a value of the wrong type, is a ``UsageError`` that names the key and the
file, so a typo never silently turns an option off. Relative paths resolve
against the config file's folder: a config works from any working directory
(cron starts jobs in ``$HOME``).

The command line, or keyword arguments in Python, win over the file. The one
exception is ``suppress``: do-not-call lists from both places all apply, so
adding a list for one run can never drop the file's lists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loader.errors import InputFileError, UsageError
from loader.files import read_regular
from loader.limits import MAX_SETTINGS_BYTES
from loader.options import O, RunOptions


class _WrongType(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _WrongType("text in quotes")


def _whole(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _WrongType("a whole number")


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _WrongType("a number")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _WrongType("true or false")


def _text_or_whole(value: Any) -> str | int:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _WrongType("a whole number or text")


def _date_time(value: Any) -> str | dt.datetime:
    if isinstance(value, str | dt.datetime):
        return value
    raise _WrongType('a date and time, e.g. 2030-05-28T09:30:00 or "2030-05-28 09:30"')


def _time_of_day(value: Any) -> str | dt.time:
    if isinstance(value, str | dt.time):
        return value
    raise _WrongType('a time of day, e.g. "08:30"')


def _gap(value: Any) -> str | int:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return ",".join(str(v) for v in value)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _WrongType("minutes: a whole number, or a list of them such as [30, 120]")


def _map(value: Any) -> list[str] | dict[str, str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise _WrongType('a list such as ["Mobile No=to_number"], or a table of "HEADER" = "FIELD"')


def _duration(value: Any) -> str | dt.timedelta:
    if isinstance(value, str | dt.timedelta):
        return value
    raise _WrongType('a duration in quotes, e.g. "30m", "90s" or "2h"')


def _days(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    raise _WrongType('a whole number of days, or "all"')


def _path(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _WrongType("a file path in quotes")


def _paths(value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise _WrongType('a list of file paths, e.g. ["dnc.csv"]')


#: What each ``RunOptions`` field accepts in a config file.
CHECKS: dict[str, Callable[[Any], Any]] = {
    "sheet": _text_or_whole,
    "header_row": _whole,
    "encoding": _text,
    "map": _map,
    "default_region": _text,
    "timezone": _text,
    "allow_past": _flag,
    "allow_duplicates": _flag,
    "include_hidden_rows": _flag,
    "suppress": _paths,
    "schedule_at": _date_time,
    "min_trigger_time": _time_of_day,
    "max_trigger_time": _time_of_day,
    "carry_over": _flag,
    "retries": _text_or_whole,
    "gap": _gap,
    "priority": _text_or_whole,
    "agent_id": _text,
    "campaign_name": _text,
    "batch_id": _text,
    "output": _path,
    "concurrency": _whole,
    "rate_limit": _number,
    "retry_for": _duration,
    "dry_run": _flag,
    "sandbox": _flag,
    "base_url": _text,
    "fresh": _flag,
    "retry_uncertain": _flag,
    "history": _path,
    "skip_recent": _days,
    "no_history": _flag,
    "summary_json": _path,
    "log_file": _path,
    "no_progress": _flag,
    "quiet": _flag,
}
#: Options holding paths, resolved against the config file's folder.
PATH_OPTIONS = frozenset({"output", "history", "summary_json", "log_file"})
LIST_OF_PATHS = frozenset({"suppress"})


#: How a Python caller reads what a config file's key expects.
_IN_PYTHON = {"true or false": "True or False", "text in quotes": "text"}


def checked_keyword(name: str, value: Any) -> Any:
    """A keyword option's value (``load_campaign(fresh=True)``, or a flag's), checked and
    converted as the same key of a config file is; paths may also be ``Path`` objects."""
    if name in PATH_OPTIONS and isinstance(value, Path):
        return value
    if name in LIST_OF_PATHS and isinstance(value, list | tuple) and all(isinstance(v, Path) for v in value):
        return list(value)
    if name in LIST_OF_PATHS and isinstance(value, Path):
        return [value]
    try:
        return CHECKS[name](value)
    except _WrongType as wrong:
        expected = _IN_PYTHON.get(wrong.expected, wrong.expected)
        raise UsageError(f"option {name} must be {expected}, not {value!r}") from None


def _shown(value: Any) -> str:
    """A value as it was written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    return str(value)


def load_config(path: str | Path) -> dict[str, Any]:
    """The options in TOML file ``path``, checked and with relative paths made absolute.

    Raises ``UsageError`` naming the file (and the key) for a missing or
    unparsable file, an unknown key, or a value of the wrong type.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--config {path} is a folder, not a TOML file")
    try:
        # Read as a regular file only, and only so much: a FIFO or /dev/zero never ends.
        raw = tomllib.loads(read_regular(path, MAX_SETTINGS_BYTES, what="1 MiB").decode("utf-8"))
    except InputFileError as exc:
        raise UsageError(f"--config {exc.path}: {exc.problem}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not valid TOML ({exc})",
            hint='Write each option as key = value, e.g. default_region = "IN".',
        ) from None

    known = [f.name for f in dataclasses.fields(RunOptions)]
    values: dict[str, Any] = {}
    folder = path.parent
    for key, value in raw.items():
        if key not in CHECKS:
            raise UsageError(f"{path}: unknown key {key!r}", hint=_key_hint(key, known))
        try:
            checked = CHECKS[key](value)
        except _WrongType as wrong:
            raise UsageError(f"{path}: {key} must be {wrong.expected}, not {_shown(value)}") from None
        if key in PATH_OPTIONS:
            checked = _resolve(folder, checked)
        elif key in LIST_OF_PATHS:
            checked = [_resolve(folder, p) for p in checked]
        values[key] = checked
    return values


def _resolve(folder: Path, value: str) -> Path:
    given = Path(value).expanduser()
    return given if given.is_absolute() else folder / given


def _key_hint(key: str, known: list[str]) -> str:
    underscored = key.replace("-", "_").lstrip("_")
    if underscored in known:
        return f"Write it as {underscored}: keys are the option names with _ for -."
    close = difflib.get_close_matches(underscored, known, n=1)
    if close:
        return f"Did you mean {close[0]!r}? Keys are the run options' names with _ for -."
    return f"Keys are the run options' names with _ for -: {', '.join(sorted(known))}."


def layer(from_file: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (the command line, or keyword arguments) over ``from_file``.

    Do-not-call lists from both are all kept: a list added for one run never drops the file's.
    """
    merged = {**from_file, **given}
    if "suppress" in from_file and "suppress" in given:
        merged["suppress"] = [*_as_list(from_file["suppress"]), *_as_list(given["suppress"])]
    return merged


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | Path):
        return [value]
    return list(value)


def make_options(kind: type[O], options: O | None, config: str | Path | None, values: Mapping[str, Any]) -> O:
    """``options`` (or the defaults), then the ``config`` file over them, then ``values`` over both:
    how the library's keywords and the command line's flags both meet a --config file."""
    if options is not None and not isinstance(options, kind):
        raise UsageError(
            f"options= must be loader.options.{kind.__name__}, not {type(options).__name__}",
            hint="Give the options as keyword arguments, or as loader.options."
            f"{kind.__name__}(default_region=...).",
        )
    base = options or kind()
    if config is not None:
        known = {f.name for f in dataclasses.fields(kind)}
        from_file = {k: v for k, v in load_config(config).items() if k in known}
        values = layer(from_file, values)
    return base.replace(**values) if values else base
