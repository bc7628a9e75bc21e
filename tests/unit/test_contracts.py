"""The committed generated code is exactly what `make proto` produces."""

from __future__ import annotations

from pathlib import Path

from services.common.contracts import ROOT, generate


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*_pb2.py*")}
    committed = {p.relative_to(ROOT): p.read_bytes() for p in (ROOT / "tonne").rglob("*_pb2.py*")}
    assert fresh.keys() == committed.keys(), "run `make proto`: generated files differ in name"
    stale = sorted(str(name) for name, body in fresh.items() if committed[name] != body)
    assert not stale, f"run `make proto` and commit: stale generated code in {stale}"


def test_enums_start_unspecified() -> None:
    from tonne.v1 import compliance_pb2, matching_pb2, registry_pb2, settlement_pb2

    for module in (compliance_pb2, matching_pb2, registry_pb2, settlement_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values[0].number == 0 and enum.values[0].name.endswith("UNSPECIFIED"), enum.name
