"""Numeric transaction-log codes beside the stable strings, as the Kyoto ITL numbers its
responses: a family per subject, a range of numbers per family (the registry's 7xxx in
services/registry/domain/codes.py, compliance's 8xxx in services/compliance/domain/rules),
and the families' markdown table their generated docs share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    first: int
    last: int
    title: str

    def __contains__(self, number: object) -> bool:
        return isinstance(number, int) and self.first <= number <= self.last


def cell(text: str) -> str:
    """Text that stays in its markdown table cell."""
    return text.replace("|", "\\|")


def families_table(families: Iterable[Family]) -> list[str]:
    return ["| range | family |", "| --- | --- |", *(f"| {f.first}-{f.last} | {cell(f.title)} |" for f in families)]
