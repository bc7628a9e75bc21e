"""The registry's reject codes (services/registry/domain/codes.py): every code raised is
in the table, every entry is raised (or reserved with a reason), the numbers are unique
and in their family's range, the doc is the table, and a refusal carries its number."""

from __future__ import annotations

import ast
import itertools
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from services.common.errors import DomainError
from services.registry.domain.codes import BY_CODE, CODES, FAMILIES, REGISTRY, RejectCode, markdown, numeric
from services.registry.service import rejection
from tonne.v1 import registry_pb2 as pb
from tonne.v1.envelope_pb2 import CommandRejected

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "registry-reject-codes.md"
# The exception types whose first argument is the code.
ERRORS = frozenset({"DomainError", "NotFound", "TooBusy"})
CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _sources(where: str) -> list[Path]:
    path = ROOT / where
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _code_parameters(trees: list[ast.Module]) -> dict[str, set[int]]:
    """Helpers that take a code as a parameter named `code`: name -> its positions in a call
    (a method's `self` or `cls` not counted; functions of one name may differ)."""
    found: dict[str, set[int]] = defaultdict(set)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                if "code" in names:
                    found[node.name].add(names.index("code"))
    return found


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "LITERAL"` assignments (a code kept in a constant)."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _literal(node.value)
            if value is not None:
                found[node.targets[0].id] = value
    return found


def _arguments(tree: ast.AST, helpers: dict[str, set[int]]) -> list[tuple[ast.expr, int]]:
    """Where `tree` names a code: the first argument of DomainError(...) and its kinds, a
    helper's `code` argument, any `code=` keyword, and a `{"code": ...}` body written by hand."""
    found: list[tuple[ast.expr, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node)
            if name in ERRORS and node.args:
                found.append((node.args[0], node.lineno))
            found += [(node.args[i], node.lineno) for i in sorted(helpers.get(name, ())) if i < len(node.args)]
            found += [(k.value, node.lineno) for k in node.keywords if k.arg == "code"]
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None and _literal(key) == "code":
                    found.append((value, node.lineno))
    return found


def _resolve(expr: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(expr, ast.Name):
        return constants.get(expr.id)
    return _literal(expr)


def _direct(tree: ast.AST, helpers: dict[str, set[int]], constants: dict[str, str]) -> list[tuple[str, int]]:
    """The codes `tree` names as literals (or module constants)."""
    return [(code, line) for expr, line in _arguments(tree, helpers) if (code := _resolve(expr, constants))]


def _kernel_helpers(tree: ast.Module) -> dict[str, Path]:
    """Functions imported from the shared kernel (`from services.common.x import f`)."""
    found: dict[str, Path] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services.common."):
            module = ROOT / (node.module.replace(".", "/") + ".py")
            found |= {alias.asname or alias.name: module for alias in node.names if module.exists()}
    return found


def _raised_by(function: str, module: Path) -> list[str]:
    """The literal codes a kernel function raises or returns (e.g. auth.forbidden)."""
    for node in _tree(module).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return [code for code, _ in _direct(node, {}, _constants(_tree(module)))]
    return []


@cache
def raised(where: str) -> dict[str, list[str]]:
    """code -> where it is raised (`path:line`), for the modules under `where`; the
    kernel's helpers they call (auth.forbidden(...)) count as raised there."""
    paths = _sources(where)
    trees = [_tree(p) for p in paths]
    helpers = _code_parameters(trees)
    found: dict[str, list[str]] = defaultdict(list)
    for path, tree in zip(paths, trees, strict=True):
        place = path.relative_to(ROOT)
        for code, line in _direct(tree, helpers, _constants(tree)):
            found[code].append(f"{place}:{line}")
        kernel = _kernel_helpers(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in kernel:
                for code in _raised_by(node.func.id, kernel[node.func.id]):
                    found[code].append(f"{place}:{node.lineno}")
    return dict(found)


def test_the_scan_finds_codes_raised_directly_through_helpers_and_the_kernel() -> None:
    codes = raised(REGISTRY)
    assert "HOLDINGS_INSUFFICIENT" in codes  # DomainError("...") in the ledger
    assert "TRANSFER_CANCELLED" in codes  # Controls._cancel(..., code, ...)
    assert "AUTH_FORBIDDEN" in codes  # services.common.auth.forbidden(...) in the API
    assert "REQUEST_TOO_LARGE" in raised("services/common/limits.py")  # a body written by hand


# Code arguments that are no literal: each passes on a code raised (and checked) elsewhere.
PASSED_ON = frozenset({"event.code", "refusal.code", "error.code", "code"})


def test_every_code_argument_is_a_literal_or_passes_one_on() -> None:
    """A code the scan cannot read would escape the table: only known hand-ons are allowed."""
    helpers = _code_parameters([_tree(p) for p in _sources(REGISTRY)])
    opaque: list[str] = []
    for path in _sources(REGISTRY):
        tree = _tree(path)
        constants = _constants(tree)
        for expr, line in _arguments(tree, helpers):
            text = ast.unparse(expr)
            if _resolve(expr, constants) is None and text not in PASSED_ON:
                opaque.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not opaque, f"codes the scan cannot read (use a string literal): {opaque}"


def test_the_scan_reads_literals_constants_and_helper_arguments() -> None:
    source = """
FROZEN = "SOME_FROZEN"
def cancel(account, code, reason): ...
class C:
    def cancel(self, code): ...
def f(x):
    raise DomainError("SOME_LITERAL", "r", [])
    raise NotFound(FROZEN, "r")
    cancel(x, "SOME_HELPER", "r")
    x.cancel("SOME_METHOD")
    y = Event(code="SOME_KEYWORD")
    body = {"code": "SOME_BODY"}
    raise DomainError(x.code, "passed on")
"""
    tree = ast.parse(source)
    found = {code for code, _ in _direct(tree, _code_parameters([tree]), _constants(tree))}
    assert found == {"SOME_FROZEN", "SOME_LITERAL", "SOME_HELPER", "SOME_METHOD", "SOME_KEYWORD", "SOME_BODY"}


def test_every_code_raised_in_the_registry_is_in_the_table() -> None:
    missing = {code: places for code, places in raised(REGISTRY).items() if code not in BY_CODE}
    assert not missing, f"add these to services/registry/domain/codes.py (and regenerate the doc): {missing}"


def test_every_code_the_api_documents_is_in_the_table() -> None:
    """The codes the OpenAPI responses name (`refusals(_422="A or B")`) are the table's."""
    named: dict[str, list[str]] = defaultdict(list)
    for path in _sources(REGISTRY):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and _name(node) == "refusals":
                for keyword in node.keywords:
                    for code in CODE.findall(_literal(keyword.value) or ""):
                        named[code].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert named
    missing = {code: places for code, places in named.items() if code not in BY_CODE}
    assert not missing, f"the API documents codes the table lacks: {missing}"


@pytest.mark.parametrize("entry", CODES, ids=lambda e: e.code)
def test_every_entry_is_raised_or_reserved(entry: RejectCode) -> None:
    is_raised = entry.code in raised(entry.raised_in)
    if entry.reserved:
        assert not is_raised, f"{entry.code} is raised in {entry.raised_in}: drop its reserved mark"
    else:
        assert is_raised, f"{entry.code} is raised nowhere in {entry.raised_in} (nor marked reserved)"


def test_codes_and_numbers_are_unique_and_in_their_family() -> None:
    assert len(BY_CODE) == len(CODES), "a code string is in the table twice"
    numbers = [e.numeric for e in CODES]
    assert len(set(numbers)) == len(numbers), "a numeric code is given twice"
    for entry in CODES:
        assert CODE.fullmatch(entry.code), entry.code
        assert entry.family in FAMILIES, entry.code
        assert entry.numeric in entry.family, f"{entry.code}: {entry.numeric} outside {entry.family.name}"
        assert entry.meaning and entry.evidence, entry.code
        assert "\n" not in entry.meaning + entry.evidence, entry.code
    for a, b in itertools.pairwise(FAMILIES):
        assert 7000 <= a.first <= a.last < b.first <= b.last <= 7999, (a.name, b.name)


def test_lookup() -> None:
    assert numeric("HOLDINGS_INSUFFICIENT") == BY_CODE["HOLDINGS_INSUFFICIENT"].numeric
    assert numeric("NO_SUCH_CODE") == 0


def test_the_doc_is_the_table() -> None:
    assert DOC.read_text() == markdown(), (
        "docs/registry-reject-codes.md is stale: "
        "run `.venv/bin/python -m services.registry.domain.codes > docs/registry-reject-codes.md`"
    )
    for entry in CODES:
        assert f"| {entry.numeric} | `{entry.code}` |" in DOC.read_text()


def test_a_rejection_carries_the_numeric_code() -> None:
    command = pb.ReserveUnits(reservation_id="R-1", account_id="TH-A", quantity=5)
    error = DomainError("HOLDINGS_INSUFFICIENT", "account holds 0 eligible units, 5 asked", ["ns:1-2"])
    recorded = rejection(command, error)
    assert recorded.numeric_code == BY_CODE["HOLDINGS_INSUFFICIENT"].numeric != 0
    assert (recorded.code, recorded.command_id, list(recorded.evidence)) == ("HOLDINGS_INSUFFICIENT", "R-1", ["ns:1-2"])
    on_the_wire = CommandRejected.FromString(recorded.SerializeToString())
    assert on_the_wire.numeric_code == recorded.numeric_code
    assert rejection(command, DomainError("NO_SUCH_CODE", "?")).numeric_code == 0
