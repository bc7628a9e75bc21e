"""The registry's policy files, read and validated at start-up: a file that does not
validate stops the service, naming the file and the field. `issuance/`: one file per
programme and host party (domain/issuance_rules.py); `issuance.schema.json` is their
JSON Schema, generated from the models (tests keep it current)."""

from __future__ import annotations

import json
from pathlib import Path

from services.registry.domain.issuance_rules import IssuancePolicies, IssuanceRules

HERE = Path(__file__).parent
SCHEMA = HERE / "issuance.schema.json"


def issuance_policies(directory: Path = HERE / "issuance") -> IssuancePolicies:
    rules = []
    for path in sorted(directory.glob("*.json")):
        try:
            rules.append(IssuanceRules.model_validate_json(path.read_bytes()))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    return IssuancePolicies(rules)


def schema() -> str:
    return json.dumps(IssuanceRules.model_json_schema(), indent=2, sort_keys=True) + "\n"
