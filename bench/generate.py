"""Seeded benchmark inputs: lead sheets as CRM exports and people make them.

Eleven columns: four call fields (phone, schedule_at, the calling window,
priority) and seven metadata columns. About 5% of rows are messy the way
real sheets are: numbers written nationally, with spaces, dashes or
brackets, mangled into scientific notation or too short; blank cells;
an out-of-range priority; a repeated number. Spreadsheets hold typed cells:
some phones as Excel numbers, ages as numbers, dates as date cells.

Files are written once per (kind, rows, seed, version) into the cache folder
(default ``~/.cache/callkaro-loader-bench``) and reused: the 1,048,575-row
workbook takes minutes to write.

    python bench/generate.py csv 1000000      # prints the path
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Bump when the data changes, so cached files are rebuilt.
VERSION = 1
SEED = 20261127
HEADERS = [
    "Name",
    "Phone",
    "City",
    "Lead Status",
    "Age",
    "Score",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "priority",
    "Notes",
]
CITIES = ["Bengaluru", "Mumbai", "Delhi", "Pune", "Chennai", "Kochi", "Hyderabad", "Jaipur", "Kolkata"]
STATUSES = ["New", "Follow-up", "Hot", "Cold", "Callback"]
FIRST = ["Aarav", "Priya", "Rohan", "Ananya", "Vikram", "Isha", "Kabir", "Meera", "Arjun", "Diya"]
LAST = ["Sharma", "Nair", "Iyer", "Patel", "Reddy", "Gupta", "Singh", "Das", "Menon", "Rao"]
NOTES = ["", "", "", "Asked for a call after 9", "Interested in the premium plan", "Call back next week"]
WINDOWS = [("09:00", "18:00"), ("10:00", "20:00"), ("", ""), ("8:30 AM", "5:30 PM")]
MESSY_SHARE = 0.05
MAX_EXCEL_ROWS = 1_048_575


def cache_dir() -> Path:
    folder = Path(os.environ.get("CALLKARO_BENCH_CACHE", Path.home() / ".cache" / "callkaro-loader-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _messy_phone(rng: random.Random, number: int) -> Any:
    national = str(number)
    return rng.choice(
        [
            f"+91 {national[:5]} {national[5:]}",
            f"0{national[:5]}-{national[5:]}",
            f"(+91) {national[:5]}-{national[5:]}",
            f"0091{national}",
            national,
            f"91{national}",
            "12345",
            f"{int('91' + national) / 1e11:.5f}E+11",
            "",
            "call me",
        ]
    )


def rows(count: int, *, seed: int = SEED, typed: bool = False) -> Iterator[list[Any]]:
    """``count`` data rows; ``typed`` gives spreadsheet cells (numbers, dates) instead of text."""
    rng = random.Random(seed)
    start = dt.datetime(2031, 1, 6, 9, 0)
    # Distinct valid Indian mobile numbers, in a scrambled order: (a*i + b) mod m is a permutation.
    modulus, step, offset = 1_000_000_000, 7_919_111, 123_457
    for i in range(count):
        number = 9_000_000_000 + (i * step + offset) % modulus
        messy = rng.random() < MESSY_SHARE
        phone: Any = f"+91{number}"
        if typed and rng.random() < 0.2:
            phone = int(f"91{number}")  # an Excel number cell
        if messy:
            phone = _messy_phone(rng, number)
        if rng.random() < 0.01 and i > 10:
            phone = f"+91{9_000_000_000 + ((i - 7) * step + offset) % modulus}"  # a repeated number
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        when = start + dt.timedelta(minutes=15 * rng.randrange(20_000))
        schedule: Any = when if typed else when.strftime("%Y-%m-%d %H:%M")
        low, high = rng.choice(WINDOWS)
        age: Any = rng.randrange(18, 80)
        score: Any = round(rng.random() * 100, 1)
        priority: Any = rng.randrange(-5, 10)
        if not typed:
            age, score, priority = str(age), str(score), str(priority)
        if messy:
            choice = rng.randrange(6)
            if choice == 0:
                schedule = ""
            elif choice == 1:
                age = ""
            elif choice == 2:
                priority = "150"
            elif choice == 3:
                score = ""
            elif choice == 4:
                low, high = "", ""
            else:
                age = f" {age} "
        yield [
            name,
            phone,
            rng.choice(CITIES),
            rng.choice(STATUSES),
            age,
            score,
            schedule,
            low,
            high,
            priority,
            rng.choice(NOTES),
        ]


def csv_file(count: int, *, seed: int = SEED) -> Path:
    path = cache_dir() / f"leads-{count}-{seed}-v{VERSION}.csv"
    if not path.exists():
        temp = path.with_suffix(".tmp")
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADERS)
            writer.writerows(rows(count, seed=seed))
        temp.replace(path)
    return path


def xlsx_file(count: int, *, seed: int = SEED) -> Path:
    """A workbook written as a stream (xlsxwriter's constant-memory mode): memory stays flat."""
    import xlsxwriter

    path = cache_dir() / f"leads-{count}-{seed}-v{VERSION}.xlsx"
    if not path.exists():
        temp = path.with_name(path.stem + ".tmp.xlsx")
        book = xlsxwriter.Workbook(str(temp), {"constant_memory": True})
        sheet = book.add_worksheet("Leads")
        when = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
        sheet.write_row(0, 0, HEADERS)
        for r, row in enumerate(rows(count, seed=seed, typed=True), start=1):
            for c, value in enumerate(row):
                if isinstance(value, dt.datetime):
                    sheet.write_datetime(r, c, value, when)
                elif isinstance(value, str):
                    if value:
                        sheet.write_string(r, c, value)
                else:
                    sheet.write_number(r, c, value)
        book.close()
        temp.replace(path)
    return path


def send_file(count: int, *, seed: int = SEED) -> Path:
    """A clean sheet for the sending scenarios: every row valid and distinct, in the repo's shape."""
    path = cache_dir() / f"send-{count}-{seed}-v{VERSION}.csv"
    if not path.exists():
        rng = random.Random(seed)
        temp = path.with_suffix(".tmp")
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Name", "Phone", "City", "Age", "priority"])
            for i in range(count):
                writer.writerow(
                    [f"Lead {i}", f"+91 98{i:08d}", rng.choice(CITIES), rng.randrange(18, 80), i % 7]
                )
        temp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["csv", "xlsx", "send"])
    parser.add_argument("rows", type=int)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    make = {"csv": csv_file, "xlsx": xlsx_file, "send": send_file}[args.kind]
    print(make(args.rows, seed=args.seed))


if __name__ == "__main__":
    main()
