"""An AEF report (`Settlement.aef_report`) in the files a party submits: a workbook of one
sheet per table, as the UN's Agreed Electronic Format is laid out (submission, T2
authorizations, T3 actions, T4 holdings, T5 authorized entities, and the consistency
findings), or every table in one CSV. Quantities stay exact: written as the integers (or
decimal text, beyond what a spreadsheet number holds exactly) the report carries."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from openpyxl import Workbook

# The report's tables and the sheets they become, in the AEF's order.
SHEETS = (
    ("submission", "Submission"),
    ("authorizations", "T2 Authorizations"),
    ("actions", "T3 Actions"),
    ("holdings", "T4 Holdings"),
    ("authorized_entities", "T5 Authorized entities"),
    ("findings", "Findings"),
)
# A spreadsheet number is a double: integers beyond this are written as text, exactly.
EXACT = 2**53


def flat(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """One level of columns: a nested message's fields as `<field>.<subfield>`."""
    found: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, Mapping):
            found |= flat(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            found[f"{prefix}{name}"] = json.dumps(value)
        else:
            found[f"{prefix}{name}"] = value
    return found


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns in order of first appearance, and each row under them."""
    flattened = [flat(row) for row in rows]
    columns: list[str] = []
    for row in flattened:
        columns += [c for c in row if c not in columns]
    return columns, [[row.get(c, "") for c in columns] for row in flattened]


def _tables(report: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    found = []
    for key, title in SHEETS:
        rows = report[key]
        found.append((title, [rows] if isinstance(rows, Mapping) else list(rows)))
    return found


def _cell(value: Any) -> Any:
    """Numbers a spreadsheet holds exactly as numbers; the report's decimal-text quantities
    (uint64 in JSON) as numbers when exact, else as the text."""
    if isinstance(value, str) and value.isdigit() and int(value) < EXACT:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= EXACT:
        return str(value)
    return value


def xlsx(report: Mapping[str, Any]) -> bytes:
    book = Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for title, rows in _tables(report):
        sheet = book.create_sheet(title)
        columns, values = table(rows)
        sheet.append(columns)
        for row in values:
            sheet.append([_cell(v) for v in row])
        sheet.freeze_panes = "A2"
    sheet = book.create_sheet("Consistency")
    sheet.append(["party", "year", "consistent"])
    sheet.append([report["party"], report["year"], report["consistent"]])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_text(report: Mapping[str, Any]) -> str:
    """Every table of the report as rows of one CSV: its table, then its fields."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["table", "field", "value", "row"])
    for table_name in ("authorizations", "actions", "holdings", "findings"):
        for n, row in enumerate(report[table_name]):
            for field, value in sorted(row.items()):
                writer.writerow([table_name, field, json.dumps(value) if isinstance(value, dict | list) else value, n])
    writer.writerow(["report", "consistent", report["consistent"], 0])
    return out.getvalue()
