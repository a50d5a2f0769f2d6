"""What each command loads: validate and dry runs start without the HTTP stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import loader

SAMPLE = Path(__file__).parent.parent / "sample_data" / "contacts.csv"
HTTP_STACK = [
    *("httpx", "aiohttp", "tenacity", "aiolimiter", "starlette", "uvicorn"),
    *("loader.client", "loader.send"),
]


def test_every_public_name_of_the_package_resolves() -> None:
    for name in loader.__all__:
        assert getattr(loader, name) is not None, name


def test_validate_never_loads_the_http_client(tmp_path: Path) -> None:
    # One fresh interpreter: runs the real command, then reports which modules it loaded.
    argv = ["validate", str(SAMPLE), "--default-region", "IN", "--timezone", "Asia/Kolkata"]
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
    assert report["code"] == 1  # the sample has two invalid rows on purpose
    assert report["loaded"] == []


def test_the_command_line_starts_before_pandas_so_a_workbook_can_be_parsed_meanwhile() -> None:
    # loader.early_read overlaps the workbook's parse with the heavy imports; it only helps
    # while the command line itself does not import them.
    heavy = {"pandas", "pyarrow", "pandera", "numpy"}
    script = f"import sys, loader.cli; print(sorted({heavy!r} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
