"""Regenerate contacts.csv and contacts.xlsx: the same 25 leads, written as each program would.

The Excel copy stores what Excel users really have: some phone numbers as
numbers, windows as time cells, dates as date-time cells, yes/no as
booleans. Both files must give identical request bodies.

    .venv/bin/python sample_data/make_samples.py
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
HEADERS = [
    "Name",
    "Phone",
    "City",
    "Lead Status",
    "Age",
    "schedule_at",
    "min_trigger_time",
    "max_trigger_time",
    "carry_over",
    "number_of_retries",
    "gap_between_retries",
    "priority",
    "Notes",
]
# Phone as text, or an int where the Excel copy stores the number as a number.
LEADS = [
    ("Aarav Sharma", "+91 98765 43210", "Bengaluru", "New", 34, "", "", "", "", "", "", "", ""),
    ("Priya Nair", "098450 12345", "Kochi", "Follow-up", 29, "2030-05-28 09:30", "09:00", "18:00", "yes", 3, "30,120", 5, "Asked for a call after 9, not before"),
    ("Rohan Mehta", 919820011223, "Mumbai", "New", "", "", "10:00", "19:00", "", "", "", "", ""),
    ("Ananya Iyer", "+91-99001-23456", "Chennai", "Hot", 41, "", "", "", "no", 2, "45", 10, ""),
    ("Vikram Singh", "9811122233", "New Delhi", "New", 52, "", "", "", "", "", "", "", "Prefers Hindi"),
    ("Sneha Kulkarni", "0091 97300 45678", "Pune", "Follow-up", "", "2030-06-02 11:00", "", "", "", 1, "60", "", ""),
    ("Arjun Reddy", "+91 90000 11122", "Hyderabad", "New", 27, "", "08:30", "20:30", "yes", "", "", "", ""),
    ("Kavya Menon", "(+91) 94470 33445", "Thiruvananthapuram", "Cold", "", "", "", "", "", "", "", -20, ""),
    ("Ishaan Gupta", 918800556677, "Gurugram", "Hot", 38, "", "", "", "", 3, "[15, 30, 60]", 20, "Demo booked, confirm slot"),
    ("Meera Joshi", "98201 77889", "Mumbai", "New", 45, "", "", "", "", "", "", "", ""),
    ("Aditya Rao", "+91 80 4567 8901", "Bengaluru", "Follow-up", "", "", "09:30", "17:30", "", "", "", "", "Office landline"),
    ("Nisha Patel", "07940 123456", "Ahmedabad", "New", 33, "", "", "", "", "", "", "", ""),
    ("Karan Malhotra", "+91 98765 43210", "Chandigarh", "New", 36, "", "", "", "", "", "", "", "Same number as row 2"),
    ("Divya Pillai", "+91 98470 55667", "Kochi", "Hot", 30, "2030-05-29 16:45", "", "", "", "", "", 50, ""),
    ("Rahul Verma", "12345", "Lucknow", "New", 25, "", "", "", "", "", "", "", "Typo in the number"),
    ("Pooja Bhat", "+91 99860 11223", "Mangaluru", "Follow-up", "", "", "21:00", "09:00", "", "", "", 150, "Window and priority are wrong"),
    ("Siddharth Jain", "9829012345", "Jaipur", "New", 47, "", "", "", "", "", "", "", ""),
    ("Lakshmi Subramanian", "+91 94440 12345", "Chennai", "Cold", 58, "", "", "", "", 0, "", "", ""),
    ("Farhan Qureshi", "+91 98300 44556", "Kolkata", "New", 31, "", "", "", "", "", "", "", ""),
    ("Tanvi Deshpande", "+91 97640 99887", "Nagpur", "Hot", 26, "", "10:00", "13:00", "no", 2, "30;90", 15, ""),
    ("Harpreet Kaur", "98140 22334", "Amritsar", "Follow-up", "", "", "", "", "", "", "", "", ""),
    ("Manoj Tiwari", "+91 94150 66778", "Varanasi", "New", 49, "", "", "", "", "", "", "", ""),
    ("Shreya Ghosh", "+91 98310 88990", "Kolkata", "New", 28, "", "", "", "", "", "", "", "Referred by Farhan"),
    ("Yash Agarwal", "+91 93140 55443", "Jaipur", "Cold", "", "", "", "", "", "", "", -5, ""),
    ("Zoya Khan", "+91 98190 33221", "Mumbai", "Hot", 35, "2030-05-30 10:15", "", "", "yes", 1, "20", 30, ""),
]


def _as_text(value: object) -> str:
    return "" if value == "" else str(value)


def write_csv(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for lead in LEADS:
            writer.writerow([_as_text(v) for v in lead])


def _excel_cell(header: str, value: object) -> object:
    if value == "":
        return None
    if header == "schedule_at":
        return dt.datetime.fromisoformat(str(value))
    if header.endswith("trigger_time"):
        return dt.time.fromisoformat(str(value))
    if header == "carry_over":
        return value == "yes"
    return value


def write_xlsx(path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Leads"
    sheet.append(HEADERS)
    for lead in LEADS:
        sheet.append([_excel_cell(h, v) for h, v in zip(HEADERS, lead, strict=True)])
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            header = HEADERS[cell.column - 1]
            if header == "schedule_at":
                cell.number_format = "yyyy-mm-dd hh:mm"
            elif header.endswith("trigger_time"):
                cell.number_format = "hh:mm"
            elif header == "Phone" and isinstance(cell.value, int):
                cell.number_format = "0"
    workbook.save(path)


if __name__ == "__main__":
    write_csv(HERE / "contacts.csv")
    write_xlsx(HERE / "contacts.xlsx")
