"""Run the benchmark scenarios of issue 5 and write ``bench/RESULTS.md``.

Every scenario runs as its own process, so its peak memory is the OS's
account of that process alone (``os.wait4``'s ``ru_maxrss``), and each is
run N times; the table shows medians. Every ratio compares two scenarios of
the same run on the same machine at the same moment: absolute timings on a
shared 2-core machine mean little, ratios do.

    python bench/run.py            # the full run (about 3 minutes once the inputs exist)
    python bench/run.py --quick    # small inputs, under a minute, same table (RESULTS.quick.md)
    python bench/run.py --profile  # also write a pyinstrument profile of each loader scenario

Inputs come from ``bench/generate.py`` and are cached outside the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

PY = sys.executable
LOADER = [PY, "-m", "loader"]
INPUT_FLAGS = ["--default-region", "IN", "--timezone", "Asia/Kolkata"]
GB = 1024**3


@dataclass(frozen=True)
class Sizes:
    csv_rows: int
    xlsx_rows: int
    max_xlsx_rows: int
    send_rows: int
    loop_rows_slow: int
    loop_rows_fast: int
    runs: int
    max_runs: int


FULL = Sizes(
    csv_rows=1_000_000,
    xlsx_rows=100_000,
    max_xlsx_rows=generate.MAX_EXCEL_ROWS,
    send_rows=5_000,
    loop_rows_slow=200,
    loop_rows_fast=2_000,
    runs=3,
    max_runs=1,
)
QUICK = Sizes(
    csv_rows=50_000,
    xlsx_rows=5_000,
    max_xlsx_rows=20_000,
    send_rows=500,
    loop_rows_slow=40,
    loop_rows_fast=300,
    runs=1,
    max_runs=1,
)


@dataclass
class Measured:
    """One scenario's runs: wall seconds, peak RSS bytes, CPU seconds, and what the child printed."""

    name: str
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_rss(self) -> int:
        return int(statistics.median(self.rss))

    def median_of(self, pick: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(pick(o) for o in self.outputs)


def run_child(argv: list[str]) -> tuple[float, int, float, str, int]:
    """Run ``argv``; its wall time, peak RSS (bytes), CPU (user + system) and stdout, from the OS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        if child.returncode not in (0, 1):
            tail = err.read().decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}:\n{tail}")
    # Linux reports ru_maxrss in kilobytes.
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, stdout, child.returncode


def measure(name: str, argv: list[str], runs: int, *, json_output: bool = False) -> Measured:
    result = Measured(name)
    for i in range(runs):
        wall, rss, cpu, stdout, _ = run_child(argv)
        result.walls.append(wall)
        result.rss.append(rss)
        result.cpu.append(cpu)
        if json_output:
            result.outputs.append(json.loads(stdout.strip().splitlines()[-1]))
        print(f"  {name} [{i + 1}/{runs}]: {wall:.2f} s, {rss / 2**20:.0f} MB", flush=True)
    return result


def profile(name: str, argv: list[str], folder: Path) -> None:
    """The scenario once more under pyinstrument; the text profile goes to ``folder/name.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.txt"
    if argv[1:3] == ["-m", "loader"]:
        wrapped = [PY, "-m", "pyinstrument", "-r", "text", "-o", str(target), "-m", "loader", *argv[3:]]
    else:
        wrapped = [PY, "-m", "pyinstrument", "-r", "text", "-o", str(target), *argv[1:]]
    run_child(wrapped)
    print(f"  profile: {target}", flush=True)


@contextmanager
def sandbox(latency_ms: int) -> Iterator[str]:
    """The sandbox on a free loopback port, with ``latency_ms`` before each answer."""
    server = subprocess.Popen(
        [*LOADER, "sandbox", "--port", "0", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        yield line.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the report ------------------------------------------------------------------------------------


def mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"


@dataclass
class Row:
    scenario: str
    input: str
    measured: Measured
    rate: str = ""
    cpu_per_request: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def at_most(
    scenario: str, label: str, measured: Measured, ratio: float, what: str, limit: float, *, digits: int = 1
) -> Row:
    """A row whose target is ``ratio`` (``what``: "the time of read_csv"...) at most ``limit``: the
    target shown and the one checked are the same number."""
    return Row(
        scenario,
        label,
        measured,
        ratio=f"{ratio:.{digits}f}x {what}",
        target=f"at most {limit:g}x",
        met=verdict(ratio <= limit),
    )


def run(sizes: Sizes, *, quick: bool, profile_dir: Path | None) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    print(f"inputs (cached in {generate.cache_dir()})", flush=True)
    big_csv = generate.csv_file(sizes.csv_rows)
    xlsx = generate.xlsx_file(sizes.xlsx_rows)
    max_xlsx = generate.xlsx_file(sizes.max_xlsx_rows)
    send_csv = generate.send_file(sizes.send_rows)
    rows: list[Row] = []
    n = sizes.runs
    csv_label = f"CSV, {sizes.csv_rows:,} rows x 11"
    xlsx_label = f"XLSX, {sizes.xlsx_rows:,} rows x 11"
    max_label = f"XLSX, {sizes.max_xlsx_rows:,} rows x 11"

    def loader_scenario(name: str, argv: list[str], runs: int, **kw: Any) -> Measured:
        measured = measure(name, argv, runs, **kw)
        if profile_dir is not None:
            profile(name.replace(" ", "_"), argv, profile_dir)
        return measured

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        print("reading and validating", flush=True)
        read_csv = measure(
            "pandas.read_csv",
            [PY, "-c", "import sys, pandas; pandas.read_csv(sys.argv[1], dtype=str)", str(big_csv)],
            n,
        )
        validate_csv = loader_scenario("validate csv", [*LOADER, "validate", str(big_csv), *INPUT_FLAGS], n)
        dry_run = loader_scenario(
            "dry-run csv",
            [
                *LOADER,
                "run",
                str(big_csv),
                "--dry-run",
                "--agent-id",
                "demo-agent",
                *INPUT_FLAGS,
                "--output",
                str(out / "dry.results.csv"),
                "--no-progress",
                "--quiet",
            ],  # fmt: skip
            n,
        )
        calamine = measure(
            "calamine",
            [
                PY,
                "-c",
                "import sys; from python_calamine import CalamineWorkbook; "
                "CalamineWorkbook.from_path(sys.argv[1]).get_sheet_by_index(0).to_python()",
                str(xlsx),
            ],  # fmt: skip
            n,
        )
        validate_xlsx = loader_scenario("validate xlsx", [*LOADER, "validate", str(xlsx), *INPUT_FLAGS], n)
        validate_max = loader_scenario(
            "validate max xlsx", [*LOADER, "validate", str(max_xlsx), *INPUT_FLAGS], sizes.max_runs
        )

    rows.append(Row("`pandas.read_csv(dtype=str)` (baseline)", csv_label, read_csv))
    rows.append(
        at_most(
            "`validate`, whole process",
            csv_label,
            validate_csv,
            validate_csv.wall / read_csv.wall,
            "the time of read_csv",
            8,
        )
    )
    rows.append(
        at_most(
            "`run --dry-run`, whole process",
            csv_label,
            dry_run,
            dry_run.peak_rss / read_csv.peak_rss,
            "the peak RSS of read_csv",
            1.5,
            digits=2,
        )
    )
    rows.append(Row("python-calamine reads the sheet (baseline)", xlsx_label, calamine))
    rows.append(
        at_most(
            "`validate`, whole process",
            xlsx_label,
            validate_xlsx,
            validate_xlsx.wall / calamine.wall,
            "the time of calamine",
            1.5,
        )
    )
    rows.append(
        Row(
            "`validate`, whole process",
            max_label,
            validate_max,
            ratio=f"completes; peak RSS {validate_max.peak_rss / GB:.2f} GB",
            target="completes, under 1.5 GB",
            met=verdict(validate_max.peak_rss < 1.5 * GB),
        )
    )

    for latency, loop_rows, target in ((50, sizes.loop_rows_slow, 15.0), (0, sizes.loop_rows_fast, 1.0)):
        print(f"sending, sandbox at {latency} ms", flush=True)
        with sandbox(latency) as url:
            loop = measure(
                f"requests loop {latency} ms",
                [PY, str(HERE / "child.py"), "requests-loop", url, str(send_csv), "--rows", str(loop_rows)],
                n,
                json_output=True,
            )
            sent = loader_scenario(
                f"run {latency} ms",
                [PY, str(HERE / "child.py"), "send", url, str(send_csv), "--concurrency", "32"],
                n,
                json_output=True,
            )
        for output in sent.outputs:
            if output["counts"] != {"scheduled": sizes.send_rows}:
                raise RuntimeError(f"the loader did not schedule every row: {output['counts']}")
        loop_rate = loop.median_of(lambda o: o["rows_per_second"])
        # The whole process, reading and validating included, against the bare loop.
        run_rate = sizes.send_rows / sent.wall
        send_rate = sent.median_of(lambda o: sizes.send_rows / o["durations"]["send_seconds"])
        ratio = run_rate / loop_rate
        send_ratio = send_rate / loop_rate
        rows.append(
            Row(
                f"plain sequential `requests.Session` loop, {latency} ms latency (baseline)",
                f"{loop_rows:,} of the same bodies",
                loop,
                rate=f"{loop_rate:,.0f}",
                cpu_per_request=f"{loop.median_of(lambda o: o['cpu_ms_per_request']):.2f} ms",
            )
        )
        rows.append(
            Row(
                f"`run --concurrency 32`, {latency} ms latency, whole process",
                f"CSV, {sizes.send_rows:,} rows",
                sent,
                rate=f"{run_rate:,.0f} (sending alone: {send_rate:,.0f})",
                cpu_per_request=f"{sent.median_of(lambda o: o['durations']['cpu_ms_per_request']):.2f} ms",
                ratio=f"{ratio:.1f}x the rows/s of the loop (sending alone: {send_ratio:.1f}x)",
                target=f"at least {target:g}x",
                met=verdict(ratio >= target),
            )
        )
    notes.append(
        f"The `requests` loop posts the first {sizes.loop_rows_slow:,} (at 50 ms) or "
        f"{sizes.loop_rows_fast:,} (at 0 ms) of the bodies the loader sends, to keep the run short; "
        "its rows/s is timed around the loop alone, while the loader's counts its whole process "
        "(start-up, reading, validation, campaign, state, results file)."
    )
    if quick:
        notes.append(
            "Quick mode: small inputs and one run each; the ratios are indicative only. With 500 rows "
            "the loader's start-up (about 1 s of imports) dominates its whole-process rate: compare "
            "the sending-alone ratio."
        )
    return rows, notes


def write_report(
    path: Path, rows: list[Row], notes: list[str], sizes: Sizes, *, quick: bool, took: float
) -> None:
    from importlib.metadata import version

    versions = ", ".join(
        f"{name} {version(name)}"
        for name in ("pandas", "pyarrow", "phonenumbers", "python-calamine", "httpx-aiohttp", "aiohttp")
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py{' --quick' if quick else ''}` on {dt.date.today().isoformat()} "
        f"in {took / 60:.1f} minutes: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{versions}. "
        f"Medians of {sizes.runs} run{'s' if sizes.runs != 1 else ''} "
        f"({sizes.max_runs} for the largest workbook); each scenario is its own process, its peak RSS "
        "as the OS counted it. Ratios compare scenarios of this same run.",
        "",
        "| scenario | input | median wall | peak RSS | rows/s | client CPU / request | ratio | target "
        "| met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.input} | {row.measured.wall:.2f} s | {mb(row.measured.peak_rss)} | "
            f"{row.rate} | {row.cpu_per_request} | {row.ratio} | {row.target} | {row.met} |"
        )
    lines += ["", *(f"- {note}" for note in notes), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one run each, under a minute")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3, quick 1)")
    parser.add_argument(
        "--profile", action="store_true", help="write pyinstrument profiles to bench/profiles/"
    )
    parser.add_argument(
        "--output", type=Path, help="default bench/RESULTS.md (quick: bench/RESULTS.quick.md)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    output = args.output or HERE / ("RESULTS.quick.md" if args.quick else "RESULTS.md")
    started = time.perf_counter()
    rows, notes = run(sizes, quick=args.quick, profile_dir=HERE / "profiles" if args.profile else None)
    write_report(output, rows, notes, sizes, quick=args.quick, took=time.perf_counter() - started)
    print(output.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
