"""The AEF report as files: one sheet per table with a row per record, nested messages as
dotted columns, quantities exact (numbers while a spreadsheet holds them exactly, text
beyond)."""

from __future__ import annotations

import io
from typing import Any

import openpyxl

from services.settlement.aef_export import EXACT, flat, table, xlsx


def report(quantity: str) -> dict[str, Any]:
    serials = {"namespace": "JCM-TH", "start": "1", "end": quantity}
    action: dict[str, Any] = {"action_id": "T1:ft", "action": "ITMO_FIRST_TRANSFER", "quantity": quantity}
    action["serials"] = serials
    return {
        "party": "TH",
        "year": 2026,
        "submission": {"party": "TH", "reported_year": 2026, "format": "AEF (decision 6/CMA.4)"},
        "authorizations": [],
        "actions": [action, {"action_id": "T2:use", "action": "ITMO_USE", "quantity": "5", "purpose": "NDC"}],
        "holdings": [],
        "authorized_entities": [],
        "findings": [],
        "consistent": True,
    }


def test_nested_fields_become_columns_in_order_of_appearance() -> None:
    assert flat({"a": 1, "s": {"n": "x", "e": 2}, "l": [1]}) == {"a": 1, "s.n": "x", "s.e": 2, "l": "[1]"}
    columns, rows = table([{"a": 1}, {"b": 2, "a": 3}])
    assert (columns, rows) == (["a", "b"], [[1, ""], [3, 2]])


def test_the_workbook_keeps_every_quantity_exact() -> None:
    huge = str(2**64 - 1)
    for quantity, cell in (("3000", 3000), (str(EXACT - 1), EXACT - 1), (huge, huge)):
        book = openpyxl.load_workbook(io.BytesIO(xlsx(report(quantity))), read_only=True)
        header, first, second = [list(r) for r in book["T3 Actions"].iter_rows(values_only=True)]
        assert header == [
            "action_id",
            "action",
            "quantity",
            "serials.namespace",
            "serials.start",
            "serials.end",
            "purpose",
        ]
        assert first[2] == first[5] == cell and second[2:] == [5, None, None, None, "NDC"]
        assert [list(r) for r in book["Submission"].iter_rows(values_only=True)][1] == [
            "TH",
            2026,
            "AEF (decision 6/CMA.4)",
        ]
        assert list(book["T2 Authorizations"].iter_rows(values_only=True)) == []
