"""Schemathesis over each service's OpenAPI document, authenticated, against the running
stack: `--checks all`, at least 100 requests per operation that takes input (counted from
the run's HAR record; operations with no parameters and no body, such as /healthz, have
only a few distinct requests and are counted, not held to it); no server error, no status
code or body the document does not declare (docs/trust.md).

Tokens: a broker (broker-a) for matching, whose order endpoints need that role; the
operator for the others. `/audit/{jurisdiction}/stream` is left out: a granted stream
never ends, so no response could be checked (tests/e2e/test_authority.py reads it).
Schema-valid input may still be refused by a business rule (a price outside the
instrument's band, a cursor that no page issued): 422 counts as an accepted answer to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.common.auth import DevIssuer

CASES_PER_OPERATION = 100
# Hypothesis may stop short of its budget on an operation with few distinct inputs: ask
# for more than the floor.
MAX_EXAMPLES = 150
EXCLUDED = ("/audit/{jurisdiction}/stream",)
# Inputs come from the schema alone: with ids learned from earlier responses, an
# operation such as DELETE /orders/{order_id} drew from a few known ids and Hypothesis
# stopped after 24 distinct cases.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[phases.fuzzing.extra-data-sources]
responses = false
"""
# service -> the identity its document is exercised with
IDENTITIES = {
    "matching": ("broker-a", ["broker"], "broker-a"),
    "settlement": ("venue-operator", ["operator"], ""),
    "compliance": ("venue-operator", ["operator"], ""),
    "registry": ("venue-operator", ["operator"], ""),
}


async def fuzz(url: str, token: str, folder: Path) -> tuple[int, str, dict[str, Any]]:
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    report = folder / "report.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing",
        "--header", f"Authorization: Bearer {token}",
        *[arg for path in EXCLUDED for arg in ("--exclude-path", path)],
        "--request-timeout", "20",
        "--generation-database", "none",
        "--seed", "7",
        "--report", "json,har", "--report-json-path", str(report), "--report-har-path", str(folder / "run.har"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=folder,  # its own files (.schemathesis/) stay out of the work tree
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), json.loads(report.read_text()) if report.exists() else {}


def cases_per_operation(document: dict[str, Any], har: dict[str, Any]) -> dict[str, int]:
    """Requests sent per operation ("GET /accounts/{account_id}"), from the run's HAR
    record of every request, matched to the document's path templates."""
    operations = {
        f"{method.upper()} {path}": re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for path, item in document["paths"].items()
        for method in item
        if path not in EXCLUDED
    }
    counts = dict.fromkeys(operations, 0)
    for entry in har["log"]["entries"]:
        method, path = entry["request"]["method"], urlsplit(entry["request"]["url"]).path
        for name, pattern in operations.items():
            if name.startswith(method + " ") and pattern.match(path):
                counts[name] += 1
                break
    return counts


def takes_input(document: dict[str, Any], name: str) -> bool:
    method, path = name.split(" ", 1)
    operation = document["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody"))


@pytest.mark.parametrize("service", list(IDENTITIES))
async def test_the_openapi_document_holds_under_fuzzing(
    running_stack: Any, dev_issuer: DevIssuer, tmp_path: Path, service: str
) -> None:
    subject, roles, broker_id = IDENTITIES[service]
    token = dev_issuer.mint(subject, roles, broker_id)
    code, output, report = await fuzz(running_stack.urls[service], token, tmp_path)
    print(f"\nschemathesis {service}:\n" + "\n".join(output.splitlines()[-25:]))
    assert code == 0, output[-20000:]
    assert report, "schemathesis wrote no report"
    har = json.loads((tmp_path / "run.har").read_text())
    statuses = [entry["response"]["status"] for entry in har["log"]["entries"]]
    async with httpx.AsyncClient() as client:
        document = (await client.get(f"{running_stack.urls[service]}/openapi.json")).json()
    counts = cases_per_operation(document, har)
    print(f"{service}: {len(statuses)} requests, {sum(s >= 500 for s in statuses)} server errors; cases per operation:")
    for name, count in sorted(counts.items()):
        print(f"  {count:5d}  {name}")
    assert not [s for s in statuses if s >= 500]
    # An operation without parameters or body has only a handful of distinct requests.
    varied = {name for name, count in counts.items() if takes_input(document, name)}
    assert varied and min(counts[name] for name in varied) >= CASES_PER_OPERATION, counts
