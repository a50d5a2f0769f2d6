"""What each command loads: validate, dry runs and status start without the HTTP stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import loader
from loader.pipeline import load_campaign

SAMPLE = Path(__file__).parent.parent / "sample_data" / "contacts.csv"
HTTP_STACK = [
    *("httpx", "aiohttp", "tenacity", "aiolimiter", "starlette", "uvicorn"),
    *("loader.client", "loader.send"),
]


def test_every_public_name_of_the_package_resolves() -> None:
    for name in loader.__all__:
        assert getattr(loader, name) is not None, name


REGION = ["--default-region", "IN", "--timezone", "Asia/Kolkata"]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # The sample has two invalid rows on purpose: exit 1.
        (["validate", str(SAMPLE), *REGION], 1),
        (["run", str(SAMPLE), "--agent-id", "demo-agent", "--dry-run", "--output", "dry.csv", *REGION], 1),
        (["status", "sent.csv"], 1),
    ],
    ids=["validate", "run --dry-run", "status"],
)
def test_commands_that_send_nothing_never_load_the_http_client(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    # A finished run for status to read (made here, in this process, not in the one measured).
    load_campaign(SAMPLE, agent_id="demo-agent", sandbox=True, output=tmp_path / "sent.csv", **ARGS)
    # One fresh interpreter: runs the real command, then reports which modules it loaded.
    script = (
        "import json, sys\n"
        "from loader.cli import main\n"
        f"code = main({argv!r})\n"
        f"print(json.dumps({{'code': code, 'loaded': [m for m in {HTTP_STACK!r} if m in sys.modules]}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == code, done.stderr
    assert report["loaded"] == []


ARGS = {"default_region": "IN", "timezone": "Asia/Kolkata"}


def test_the_command_line_starts_before_pandas_so_a_workbook_can_be_parsed_meanwhile() -> None:
    # loader.early_read overlaps the workbook's parse with the heavy imports; it only helps
    # while the command line itself does not import them.
    heavy = {"pandas", "pyarrow", "pandera", "numpy"}
    script = f"import sys, loader.cli; print(sorted({heavy!r} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
