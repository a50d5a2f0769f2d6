"""The sandbox as its own process on a real loopback port, for tests that need the API over HTTP."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "callkaro-loader")
READY = re.compile(r"CallKaro sandbox on (http://\S+) \(")
# A cold start takes a second or two; thirty leaves room for a loaded CI machine without letting a
# sandbox that never comes up hold the whole run.
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class RunningSandbox:
    url: str
    #: The line it printed once ready, for tests that hold it to what it says about itself.
    banner: str


@contextlib.contextmanager
def running_sandbox(*flags: str, timeout: float = START_TIMEOUT) -> Iterator[RunningSandbox]:
    """``callkaro-loader sandbox --port 0 *flags``, ready when it is yielded, stopped at the end.

    ``flags`` may choose the port (``--port N``) instead: given twice, it would be refused."""
    port = () if any(f == "--port" or f.startswith("--port=") for f in flags) else ("--port", "0")
    argv = [CLI, "sandbox", *port, *flags]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        try:
            ready = _wait_until_ready(server, argv, timeout)
            yield RunningSandbox(url=ready[1], banner=ready.string)
        finally:
            _stop(server)


def _wait_until_ready(server: subprocess.Popen[str], argv: list[str], timeout: float) -> re.Match[str]:
    stdout, stderr = server.stdout, server.stderr
    assert stdout is not None and stderr is not None
    first: list[str] = []
    # readline() has no timeout of its own: read in a thread so that a sandbox that hangs before
    # printing fails this test instead of hanging the run.
    reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    ready = READY.match(first[0]) if first else None
    if ready is not None:
        return ready
    hung = reader.is_alive()
    # Killed first so that the reader and stderr see the end of the pipes and return.
    server.kill()
    reader.join()
    server.wait()
    line = first[0] if first else ""
    waited = f" (no full line within {timeout:g} s)" if hung else ""
    pytest.fail(
        f"the sandbox did not start: {shlex.join(argv)}\n"
        f"exit code {server.returncode}; first line {line!r}{waited}\n"
        f"stderr:\n{stderr.read()}",
        pytrace=False,
    )


def _stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    # communicate(), not wait(): it drains the pipes, so a sandbox with a full stderr pipe can still exit.
    try:
        server.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
