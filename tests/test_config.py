"""``--config FILE.toml``: every run option by name, typos refused, the command line winning."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest

import loader
from loader.cli import main
from loader.config import CHECKS, load_config
from loader.errors import UsageError
from loader.options import RunOptions

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
CLEAN_SHEET = "Name,Phone\nAarav,098765 43210\nPriya,098450 12345\n"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "clean.csv").write_text(CLEAN_SHEET, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    monkeypatch.delenv("CALLKARO_BASE_URL", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def statuses(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {r["source_row"]: r["callkaro_status"] for r in csv.DictReader(handle)}


def test_every_run_option_can_be_written_in_a_config_file() -> None:
    assert set(CHECKS) == {f.name for f in dataclasses.fields(RunOptions)}


def test_a_typo_in_a_key_is_refused_naming_the_key_and_the_file(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "nightly.toml").write_text(
        'agent_id = "demo-agent"\nsandbox = true\ndefualt_region = "IN"\n', encoding="utf-8"
    )
    code, out, err = run(capsys, "run", "clean.csv", "--config", "nightly.toml")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "callkaro-loader: error: nightly.toml: unknown key 'defualt_region'",
        "hint: Did you mean 'default_region'? Keys are the run options' names with _ for -.",
    ]
    assert not (here / "clean.results.csv").exists()


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        pytest.param(
            'default-region = "IN"',
            "c.toml: unknown key 'default-region'",
            "Write it as default_region: keys are the option names with _ for -.",
            id="dash instead of underscore",
        ),
        pytest.param(
            'frobnicate = "IN"',
            "c.toml: unknown key 'frobnicate'",
            None,
            id="nothing like an option",
        ),
        pytest.param(
            'concurrency = "8"', 'c.toml: concurrency must be a whole number, not "8"', None, id="quoted"
        ),
        pytest.param(
            "concurrency = true", "c.toml: concurrency must be a whole number, not true", None, id="bool"
        ),
        pytest.param(
            "rate_limit = 'fast'", 'c.toml: rate_limit must be a number, not "fast"', None, id="rate"
        ),
        pytest.param(
            "retry_for = 30",
            'c.toml: retry_for must be a duration in quotes, e.g. "30m", "90s" or "2h", not 30',
            None,
            id="retry_for without quotes",
        ),
        pytest.param(
            'allow_past = "yes"',
            'c.toml: allow_past must be true or false, not "yes"',
            None,
            id="flag as text",
        ),
        pytest.param(
            "agent_id = 42", "c.toml: agent_id must be text in quotes, not 42", None, id="agent number"
        ),
        pytest.param(
            'map = "Mobile=to_number"',
            'c.toml: map must be a list such as ["Mobile No=to_number"], or a table of "HEADER" = "FIELD", '
            'not "Mobile=to_number"',
            None,
            id="map as one string",
        ),
        pytest.param(
            "suppress = [1, 2]",
            'c.toml: suppress must be a list of file paths, e.g. ["dnc.csv"], not [1, 2]',
            None,
            id="suppress numbers",
        ),
        pytest.param("[run]\nagent_id = 'x'", "c.toml: unknown key 'run'", None, id="a table"),
        pytest.param("agent_id = ", None, None, id="not TOML"),
    ],
)
def test_unknown_keys_and_wrong_types_are_usage_errors_naming_the_key(
    tmp_path: Path, text: str, message: str | None, hint: str | None
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(UsageError) as raised:
        load_config(path)
    if message is None:
        assert str(raised.value).startswith(f"{path} is not valid TOML (")
    else:
        assert str(raised.value) == f"{tmp_path}/{message}"
    if hint is not None:
        assert raised.value.hint == hint
    assert raised.value.exit_code == 2


def test_a_missing_config_file_is_a_usage_error(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "clean.csv", "--config", "nope.toml")
    assert (code, err) == (2, "callkaro-loader: error: --config nope.toml: no such file\n")


def test_values_keep_toml_types_and_relative_paths_resolve_against_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "c.toml").write_text(
        "\n".join(
            [
                'suppress = ["dnc.txt", "/srv/global-dnc.csv"]',
                'history = "../var/history.sqlite"',
                'output = "out/results.csv"',
                "schedule_at = 2030-05-28T09:30:00",
                "min_trigger_time = 10:00:00",
                "gap = [30, 120]",
                "map = { 'Mobile No' = 'to_number' }",
                "rate_limit = 5",
                'retry_for = "30m"',
                "sheet = 0",
            ]
        ),
        encoding="utf-8",
    )
    values = load_config(folder / "c.toml")
    assert values == {
        "suppress": [folder / "dnc.txt", Path("/srv/global-dnc.csv")],
        "history": folder / "../var/history.sqlite",
        "output": folder / "out/results.csv",
        "schedule_at": dt.datetime(2030, 5, 28, 9, 30),
        "min_trigger_time": dt.time(10, 0),
        "gap": "30,120",
        "map": {"Mobile No": "to_number"},
        "rate_limit": 5.0,
        "retry_for": "30m",
        "sheet": 0,
    }


def test_the_command_line_wins_over_the_file_and_the_file_fills_the_rest(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "c.toml").write_text(
        'agent_id = "demo-agent"\nsandbox = true\ndefault_region = "IN"\ntimezone = "Asia/Kolkata"\n'
        'output = "from-file.csv"\ncampaign_name = "from file"\n',
        encoding="utf-8",
    )
    code, out, err = run(capsys, "run", "clean.csv", "--config", "c.toml", "--output", "cli.csv")
    assert (code, err) == (0, "")
    assert statuses(here / "cli.csv") == {"2": "scheduled", "3": "scheduled"}  # the file's default_region
    assert not (here / "from-file.csv").exists()

    # A flag left at its default on the command line does not hide the file's value, and vice versa.
    code, out, err = run(capsys, "run", "clean.csv", "--config", "c.toml", "--default-region", "US")
    assert code == 1
    assert set(statuses(here / "from-file.csv").values()) == {"invalid"}


def test_do_not_call_lists_from_the_file_and_the_command_line_all_apply(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "a.txt").write_text("098765 43210\n", encoding="utf-8")
    (here / "b.txt").write_text("+91 98450 12345\n", encoding="utf-8")
    (here / "c.toml").write_text(
        'agent_id = "demo-agent"\nsandbox = true\ndefault_region = "IN"\nsuppress = ["a.txt"]\n',
        encoding="utf-8",
    )
    code, out, err = run(capsys, "run", "clean.csv", "--config", "c.toml", "--suppress", "b.txt")
    assert (code, err) == (0, "")
    assert statuses(here / "clean.results.csv") == {"2": "suppressed", "3": "suppressed"}


def test_the_library_takes_a_config_file_too_and_keywords_win(here: Path) -> None:
    (here / "c.toml").write_text(
        'agent_id = "nobody"\nsandbox = true\ndefault_region = "IN"\nno_progress = true\n', encoding="utf-8"
    )
    result = loader.load_campaign("clean.csv", config="c.toml", agent_id="demo-agent")
    assert result.counts == {"scheduled": 2}
    checked = loader.validate_file("clean.csv", config="c.toml")  # run-only keys are ignored here
    # As the same run again would report: its output's campaign already scheduled both.
    assert checked.counts == {"scheduled": 2}


def test_validate_reads_the_same_config_file(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "c.toml").write_text('agent_id = "demo-agent"\ndefault_region = "IN"\n', encoding="utf-8")
    code, out, err = run(capsys, "validate", "clean.csv", "--config", "c.toml")
    assert (code, out, err) == (0, "valid  2\n", "")


def test_the_sample_nightly_config_works_with_the_sample_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(
        SAMPLES, tmp_path / "sample_data", ignore=shutil.ignore_patterns("*.results.*", "nightly-*")
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "run", "sample_data/contacts.csv", "--config", "sample_data/nightly.toml")
    assert (code, err) == (1, "")  # the sample's two invalid rows need a person
    assert out.splitlines()[:4] == ["scheduled   20", "invalid     2", "duplicate   1", "suppressed  2"]
    produced = tmp_path / "sample_data"
    summary = json.loads((produced / "nightly-summary.json").read_text(encoding="utf-8"))
    assert summary["counts"] == {"scheduled": 20, "invalid": 2, "duplicate": 1, "suppressed": 2}
    assert (produced / "nightly-history.sqlite").exists()
    assert len((produced / "nightly-log.jsonl").read_text(encoding="utf-8").splitlines()) == 2 + 25

    # The next night, the Excel copy of the same leads: every number was called already.
    code, out, err = run(
        capsys,
        "run",
        "sample_data/contacts.xlsx",
        "--config",
        "sample_data/nightly.toml",
        "--output",
        "n2.csv",
    )
    assert (code, err) == (1, "")
    assert out.splitlines()[:3] == ["invalid     2", "duplicate   1", "suppressed  22"]


def test_the_config_in_the_readme_is_accepted(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    (tmp_path / "nightly.toml").write_text(block, encoding="utf-8")
    values = load_config(tmp_path / "nightly.toml")
    assert values["skip_recent"] == "all" and values["history"] == tmp_path / "state/calls.sqlite"
    RunOptions.make(**values).check()


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), (" 1.5H ", 5400), ("0s", 0)],
)
def test_retry_for_reads_a_duration_with_its_unit(given: str, seconds: float) -> None:
    from loader.options import RunOptions

    assert RunOptions(agent_id="a", retry_for=given).retry_for_seconds() == seconds
    assert RunOptions(agent_id="a").retry_for_seconds() is None
