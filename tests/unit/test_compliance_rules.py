"""Compliance's screening rules (services/compliance/domain/rules) and policies
(services/compliance/policies): one module per rule with a unique string and 8xxx code,
every code a decision carries in the table, the doc is the table, each rule with passing
and failing evidence, policies selected by acquiring jurisdiction and use with the default
as fallback, bad files refused by file and field, every decision naming its policy, and
CCER's 2020-09-22 cutoff read conservatively onto vintage years."""

from __future__ import annotations

import ast
import importlib
import itertools
import pkgutil
import re
import shutil
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.message import Message

from services.compliance.domain import rules as rules_package
from services.compliance.domain.facts import Facts
from services.compliance.domain.policies import DIRECTORY, Policies, Policy, PolicyError, first_whole_vintage
from services.compliance.domain.rules import (
    BY_CODE,
    CODES,
    PROPOSAL_RULES,
    REQUEST_INVALID,
    RULES,
    Case,
    Rule,
    numeric,
)
from services.compliance.domain.rules.rule import FAMILIES
from services.compliance.domain.rules.table import markdown
from services.compliance.domain.screening import refusal, screen
from tests.unit.factories import issuance, loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "compliance-rules.md"
CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Modules of the rules package that hold no rule.
NOT_RULES = frozenset({"rule", "table"})
ACCOUNTS = {"TH-GOV": "TH", "TH-CO": "TH", "CH-BUYER": "CH", "JP-BUYER": "JP", "CN-SELLER": "CN", "CN-BUYER": "CN"}


def policies() -> Policies:
    return Policies.load()


def facts_with(
    *blocks: rpb.SerialBlock, seller: str = "TH-GOV", quantity: int = 3000, loa_quantity: int = 4000
) -> Facts:
    facts = Facts()
    for account, party in ACCOUNTS.items():
        facts.apply(rpb.AccountOpened(account_id=account, jurisdiction=party))
    facts.apply(rpb.AuthorizationRecorded(authorization=loa(quantity=loa_quantity)))
    facts.apply(rpb.UnitsReserved(reservation_id="S1", account_id=seller, quantity=quantity, blocks=list(blocks)))
    return facts


def block(start: int = 1, end: int = 3000, **kwargs: object) -> rpb.SerialBlock:
    kwargs.setdefault("authorization_id", "LOA-TH-1")
    return issuance("I", "TH-GOV", start, end, **kwargs).block  # type: ignore[arg-type]


def ccer(vintage: int) -> rpb.SerialBlock:
    return issuance(
        "C", "CN-SELLER", 1, 100, namespace="CCER", host="CN", standard=rpb.CCER, vintage=vintage, methodology="CM-001"
    ).block


def request(
    frm: str = "TH-GOV", to: str = "CH-BUYER", quantity: int = 3000, reservation: str = "S1"
) -> cpb.ScreenTransfer:
    return cpb.ScreenTransfer(
        request_id="T1",
        trade_id="T1",
        reservation_id=reservation,
        from_account_id=frm,
        to_account_id=to,
        quantity=quantity,
    )


def result(decision: cpb.ScreeningDecision, code: str) -> cpb.RuleResult:
    return next(r for r in decision.results if r.code == code)


# --- the table ------------------------------------------------------------------------------


def rule_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(rules_package.__path__):
        if info.name not in NOT_RULES:
            found[info.name] = importlib.import_module(f"{rules_package.__name__}.{info.name}")
    return found


def test_every_rule_module_exposes_one_rule_and_the_table_lists_them_all() -> None:
    modules = rule_modules()
    every = (*RULES, *PROPOSAL_RULES)
    assert len(modules) == len(every), "one module per rule: a module without a rule, or a rule without one"
    for name, module in modules.items():
        rule = getattr(module, "RULE", None)
        assert isinstance(rule, Rule), f"{name} exposes no RULE"
        assert rule.check.__module__ == module.__name__, f"{name}'s predicate lives elsewhere"
        assert rule in every, f"{name}'s rule is not in the table (rules/__init__.py RULES or PROPOSAL_RULES)"


def test_codes_and_numbers_are_unique_and_in_their_family() -> None:
    assert len(BY_CODE) == len(CODES), "a code string is in the table twice"
    numbers = [c.numeric for c in CODES]
    assert len(set(numbers)) == len(numbers), "a numeric code is given twice"
    for entry in CODES:
        assert CODE.fullmatch(entry.code), entry.code
        assert entry.family in FAMILIES, entry.code
        assert entry.numeric in entry.family, f"{entry.code}: {entry.numeric} outside {entry.family.name}"
        assert entry.meaning and entry.evidence, entry.code
        assert "\n" not in entry.meaning + entry.evidence, entry.code
    for a, b in itertools.pairwise(FAMILIES):
        assert 8000 <= a.first <= a.last < b.first <= b.last <= 8999, (a.name, b.name)


def test_lookup() -> None:
    assert numeric("DOUBLE_CLAIMING_AUTHORIZATION") == 8401
    assert numeric("REQUEST_INVALID") == REQUEST_INVALID.numeric
    assert numeric("NO_SUCH_CODE") == 0


def test_the_doc_is_the_table() -> None:
    assert DOC.read_text() == markdown(), (
        "docs/compliance-rules.md is stale: "
        "run `.venv/bin/python -m services.compliance.domain.rules.table > docs/compliance-rules.md`"
    )
    for entry in CODES:
        assert f"| {entry.numeric} | `{entry.code}` |" in DOC.read_text()


# The one RuleResult code that is no literal: Rule.run writes the rule's own (rules/rule.py).
PASSED_ON = frozenset({"self.code"})


def _literal_result_codes(path: Path) -> list[str]:
    """The literal codes `path` puts into a RuleResult (`RuleResult(code="...")`)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("RuleResult"):
            for keyword in node.keywords:
                if keyword.arg != "code" or ast.unparse(keyword.value) in PASSED_ON:
                    continue
                code = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
                assert isinstance(code, str), f"{path}: a RuleResult code the scan cannot read"
                found.append(code)
    return found


def test_every_code_a_decision_can_carry_is_in_the_table() -> None:
    # Rules cannot emit another code: Rule.run writes the rule's own. The rest are by hand.
    by_hand = {
        code: path
        for path in sorted((ROOT / "services" / "compliance").rglob("*.py"))
        for code in _literal_result_codes(path)
    }
    assert "REQUEST_INVALID" in by_hand  # the scan sees validation.refuse
    missing = {code: str(path) for code, path in by_hand.items() if code not in BY_CODE}
    assert not missing, f"add these to services/compliance/domain/rules (and regenerate the doc): {missing}"


def decisions() -> list[cpb.ScreeningDecision]:
    """Decisions over the scenarios below, passing and failing every rule."""
    book = policies()
    made = [screen(request(), facts_with(block()), book)]
    made += [screen(screened, facts, book) for _, screened, facts, _ in FAILING]
    made += [screen(screened, facts, book) for _, screened, facts, _ in PASSING]
    made.append(refusal(request(), ["quantity must be within 1..9223372036854775807"], book))
    return made


def test_every_result_carries_the_number_of_its_code() -> None:
    seen = set()
    for decision in decisions():
        for r in decision.results:
            assert r.code in BY_CODE and r.numeric_code == BY_CODE[r.code].numeric != 0, r.code
            seen.add(r.code)
    # A proposal's rules: tests/unit/test_compliance_proposals.py.
    assert seen == set(BY_CODE) - {rule.code for rule in PROPOSAL_RULES}
    wire = cpb.ScreeningDecision.FromString(decisions()[0].SerializeToString())
    assert [r.numeric_code for r in wire.results] == [rule.numeric for rule in RULES]


# --- each rule, passing and failing, with its evidence -----------------------------------------


def with_account_event(facts: Facts, *events: Message) -> Facts:
    for event in events:
        facts.apply(event)
    return facts


PASSING = [
    ("ACCOUNTS_KNOWN", request(), facts_with(block()), "both accounts are open"),
    (
        "ACCOUNTS_KNOWN",
        request(),
        with_account_event(
            facts_with(block()),
            rpb.AccountFrozen(account_id="TH-GOV", jurisdiction="TH"),
            rpb.AccountUnfrozen(account_id="TH-GOV", jurisdiction="TH"),
            rpb.AccountFrozen(account_id="CH-BUYER", jurisdiction="CH"),  # a frozen account still receives
        ),
        "both accounts are open",
    ),
    ("HOLDINGS_RESERVED", request(), facts_with(block()), "3000 units reserved by the seller"),
    ("SERIAL_INTEGRITY", request(), facts_with(block(1, 1000), block(1001, 3000)), "2 disjoint blocks"),
    ("QUALITY_VINTAGE", request(), facts_with(block(vintage=2021)), "vintages within policy"),
    ("QUALITY_METHODOLOGY", request(), facts_with(block()), "methodologies allowed"),
    ("DOUBLE_CLAIMING_AUTHORIZATION", request(), facts_with(block()), "authorized for transfer TH -> CH"),
    (
        "DOUBLE_CLAIMING_AUTHORIZATION",
        request(to="TH-CO"),
        facts_with(block(authorization_id="")),
        "domestic transfer: no authorization needed",
    ),
]
FAILING = [
    ("ACCOUNTS_KNOWN", request(to="XX-NOBODY"), facts_with(block()), "unknown account XX-NOBODY"),
    (
        "ACCOUNTS_KNOWN",
        request(),
        with_account_event(facts_with(block()), rpb.AccountFrozen(account_id="TH-GOV", jurisdiction="TH")),
        "account TH-GOV is frozen",
    ),
    (
        "ACCOUNTS_KNOWN",
        request(),
        with_account_event(facts_with(block()), rpb.AccountClosed(account_id="CH-BUYER", jurisdiction="CH")),
        "account CH-BUYER is closed",
    ),
    ("HOLDINGS_RESERVED", request(reservation="nope"), facts_with(block()), "no reservation nope"),
    ("HOLDINGS_RESERVED", request(frm="TH-CO", to="CH-BUYER"), facts_with(block()), "held by TH-GOV, not TH-CO"),
    ("HOLDINGS_RESERVED", request(quantity=3001), facts_with(block()), "reservation holds 3000, transfer asks 3001"),
    ("SERIAL_INTEGRITY", request(), facts_with(block(1, 2000), block(1500, 3000)), "JCM-TH:1-2000 overlaps 1500-3000"),
    ("SERIAL_INTEGRITY", request(), facts_with(block(9, 1)), "JCM-TH:9-1 is empty"),
    ("QUALITY_VINTAGE", request(), facts_with(block(vintage=2020)), "JCM-TH:1-3000 JCM vintage 2020 < 2021"),
    (
        "QUALITY_VINTAGE",
        request(),
        facts_with(block(standard=rpb.STANDARD_UNSPECIFIED)),
        "STANDARD_UNSPECIFIED vintage 2024 < None",
    ),
    ("QUALITY_METHODOLOGY", request(), facts_with(block(methodology="AM0001")), "methodology AM0001 is denied"),
    (
        "DOUBLE_CLAIMING_AUTHORIZATION",
        request(),
        facts_with(block(authorization_id="")),
        "JCM-TH:1-3000 has no authorization from TH",
    ),
    (
        "DOUBLE_CLAIMING_AUTHORIZATION",
        request(),
        facts_with(block(vintage=2035)),
        "vintage 2035 outside 2021-2030",
    ),
    (
        "DOUBLE_CLAIMING_AUTHORIZATION",
        request(),
        facts_with(block(), loa_quantity=1000),
        "authorization LOA-TH-1 has 1000 left, transfer would first-transfer 3000",
    ),
]


@pytest.mark.parametrize(("code", "screened", "facts", "evidence"), PASSING, ids=[p[0] for p in PASSING])
def test_a_rule_passes_with_its_evidence(code: str, screened: cpb.ScreenTransfer, facts: Facts, evidence: str) -> None:
    found = result(screen(screened, facts, policies()), code)
    assert found.passed and found.evidence == evidence


@pytest.mark.parametrize(("code", "screened", "facts", "evidence"), FAILING, ids=[f[0] for f in FAILING])
def test_a_rule_fails_with_its_evidence(code: str, screened: cpb.ScreenTransfer, facts: Facts, evidence: str) -> None:
    decision = screen(screened, facts, policies())
    found = result(decision, code)
    assert not found.passed and evidence in found.evidence
    assert decision.verdict == cpb.REJECTED


def test_a_rule_is_a_pure_predicate_over_one_case() -> None:
    facts = facts_with(block(methodology="AM0001"))
    case = Case(request(), facts, Policy.load(), "NDC")
    rule = next(r for r in RULES if r.code == "QUALITY_METHODOLOGY")
    assert rule.run(case) == rule.run(case)
    assert rule.check(case).problems == ["JCM-TH:1-3000 methodology AM0001 is denied"]


def test_an_authorization_must_cover_the_use_screened_for() -> None:
    facts = facts_with(block())
    facts.authorizations["LOA-TH-1"].use = rpb.OIMP
    refused = result(screen(request(), facts, policies()), "DOUBLE_CLAIMING_AUTHORIZATION")
    assert not refused.passed and "authorization does not cover NDC" in refused.evidence
    oimp = Policy.load().model_copy(update={"cross_border_use": "OIMP"})
    assert result(screen(request(), facts, oimp), "DOUBLE_CLAIMING_AUTHORIZATION").passed


def test_a_revoked_authorization_first_transfers_nothing_more_but_its_itmos_resell() -> None:
    facts = facts_with(block(1, 1000), quantity=1000)
    facts.apply(rpb.AuthorizationRevoked(authorization_id="LOA-TH-1", host_party="TH", reason="withdrawn"))
    refused = result(screen(request(quantity=1000), facts, policies()), "DOUBLE_CLAIMING_AUTHORIZATION")
    assert not refused.passed
    assert "authorization LOA-TH-1 was revoked, transfer would first-transfer 1000" in refused.evidence
    # Serials 1-1000 crossed before the revocation: a resale from Switzerland spends nothing.
    crossed = rpb.UnitsTransferred(
        from_account_id="TH-GOV", to_account_id="CH-BUYER", from_jurisdiction="TH", to_jurisdiction="CH"
    )
    crossed.blocks.append(block(1, 1000))
    facts.apply(crossed)
    resale = facts_with(block(1, 1000), seller="CH-BUYER", quantity=1000)
    resale.revoked, resale.usage = facts.revoked, facts.usage
    resold = result(
        screen(request(frm="CH-BUYER", to="JP-BUYER", quantity=1000), resale, policies()),
        "DOUBLE_CLAIMING_AUTHORIZATION",
    )
    assert resold.passed, resold.evidence


# --- policies -----------------------------------------------------------------------------------


def test_the_shipped_policies_load_each_with_its_version() -> None:
    book = policies()
    assert set(book.versions) == {p.stem for p in DIRECTORY.glob("*.toml")} >= {"default", "JP-NDC", "CN-NDC"}
    assert all(book.versions.values())
    default = book.default
    # default.toml is the former services/compliance/policy.toml, value for value.
    assert (default.version, default.cross_border_use, default.jurisdiction, default.use) == (
        "2026-11-01",
        "NDC",
        None,
        None,
    )
    floors = {"CCER": 2021, "JCM": 2021, "A6_4ER": 2021, "VCU": 2016, "GS_VER": 2016, "PHCER": 2021}
    assert default.min_vintage == floors
    assert default.methodology.denied == {"AM0001"} and not default.reductions_from
    assert Policy.load() == default and default.id == "default@2026-11-01"


def test_a_policy_is_selected_by_acquiring_jurisdiction_and_use_else_the_default() -> None:
    book = policies()
    assert book.select("JP", "NDC").id.startswith("JP-NDC@")
    assert book.select("CN", "NDC").id.startswith("CN-NDC@")
    assert book.select("CH", "NDC") is book.default  # no file for Switzerland
    assert book.select("JP", "OIMP") is book.default  # none for Japan's OIMP acquisitions
    assert book.select(None, "NDC") is book.default  # acquirer unknown


def test_screening_selects_the_acquirers_policy_for_the_use_and_records_it() -> None:
    book = policies()
    facts = facts_with(block())
    to_japan = screen(request(to="JP-BUYER"), facts, book)
    japan = book.select("JP", "NDC")
    assert (to_japan.policy, to_japan.policy_version) == (japan.id, japan.version)
    to_switzerland = screen(request(), facts, book)
    assert (to_switzerland.policy, to_switzerland.policy_version) == (book.default.id, book.default.version)
    domestic = screen(request(to="TH-CO"), facts, book)  # the acquirer's jurisdiction, even at home
    assert domestic.policy == book.default.id


def test_every_decision_records_the_policy_and_version_it_used() -> None:
    for decision in decisions():
        assert decision.policy and decision.policy.endswith("@" + decision.policy_version), decision.policy
        name, version = decision.policy.split("@")
        assert policies().versions[name] == version
    single = Policy.load(DIRECTORY / "JP-NDC.toml")
    assert screen(request(), facts_with(block()), single).policy == single.id  # used as is, for anyone
    wire = cpb.ScreeningDecision.FromString(screen(request(), facts_with(block()), single).SerializeToString())
    assert wire.policy == single.id


def _directory_with(tmp_path: Path, name: str, text: str) -> Path:
    shutil.copy(DIRECTORY / "default.toml", tmp_path / "default.toml")
    (tmp_path / name).write_text(text)
    return tmp_path


HEAD = 'version = "1"\njurisdiction = "XX"\nuse = "NDC"\n'
TABLES = "[min_vintage]\nJCM = 2021\n"
GOOD = HEAD + TABLES


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("XX-NDC.toml", GOOD.replace("JCM = 2021", 'JCM = "old"'), "min_vintage.JCM"),
        ("XX-NDC.toml", GOOD.replace("JCM = 2021", "NOPE = 2021"), "min_vintage.NOPE"),
        ("XX-NDC.toml", HEAD + "surprise = true\n" + TABLES, "surprise: Extra inputs are not permitted"),
        ("XX-NDC.toml", GOOD.replace('version = "1"\n', ""), "version: Field required"),
        ("XX-NDC.toml", GOOD.replace('"NDC"', '"VOLUNTARY_USE"'), "use:"),
        ("XX-NDC.toml", GOOD.replace('jurisdiction = "XX"\n', ""), "jurisdiction and use go together"),
        ("XX-NDC.toml", GOOD + "[reductions_from]\nJCM = 2021-01-01\n", "both set for JCM"),
        ("XX-NDC.toml", HEAD + 'cross_border_use = "NDC"\n' + TABLES, "cross_border_use is the default policy's"),
        ("XX-NDC.toml", GOOD + "[methodology]\ndenied = [1]\n", "methodology.denied"),
        ("XX-OIMP.toml", GOOD, "jurisdiction and use make it XX-NDC.toml"),
        ("XX-NDC.toml", "version = ", "not TOML"),
    ],
    ids=[
        "year-not-int",
        "unknown-standard",
        "extra-field",
        "no-version",
        "unknown-use",
        "use-without-jurisdiction",
        "year-and-date",
        "cross-border-use-outside-default",
        "methodology-not-text",
        "file-name-mismatch",
        "not-toml",
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_file_and_field(
    tmp_path: Path, name: str, text: str, named: str
) -> None:
    Policies.load(_directory_with(tmp_path, "XX-NDC.toml", GOOD))  # the good file loads
    (tmp_path / "XX-NDC.toml").unlink()
    with pytest.raises(PolicyError) as refused:
        Policies.load(_directory_with(tmp_path, name, text))
    assert name in str(refused.value) and named in str(refused.value), str(refused.value)


def test_a_directory_without_a_default_policy_is_refused(tmp_path: Path) -> None:
    (tmp_path / "XX-NDC.toml").write_text(GOOD)
    with pytest.raises(PolicyError, match=r"no default\.toml"):
        Policies.load(tmp_path)


def test_policies_are_frozen_data() -> None:
    policy = Policy.load()
    with pytest.raises(ValueError):
        policy.version = "2099"  # type: ignore[misc]
    with pytest.raises(PolicyError, match="two policies for JP-NDC"):
        Policies(policy, [policies().select("JP", "NDC")] * 2)


# --- CCER: reductions on or after 2020-09-22 ------------------------------------------------------


def test_a_date_cutoff_admits_only_vintages_wholly_on_or_after_it() -> None:
    # A vintage names a year, not the day: a year that starts before the cutoff may hold
    # reductions from before it, so it is refused.
    assert first_whole_vintage(date(2020, 9, 22)) == 2021
    assert first_whole_vintage(date(2020, 12, 31)) == 2021
    assert first_whole_vintage(date(2021, 1, 1)) == 2021
    assert first_whole_vintage(date(2020, 1, 2)) == 2021
    assert first_whole_vintage(date(2020, 1, 1)) == 2020


def test_the_ccer_rule_is_a_date_in_chinas_policy() -> None:
    book = policies()
    china = book.select("CN", "NDC")
    assert china.reductions_from["CCER"] == date(2020, 9, 22)
    old = screen(request("CN-SELLER", "CN-BUYER", 100), facts_with(ccer(2020), seller="CN-SELLER", quantity=100), book)
    assert old.policy == china.id
    refused = result(old, "QUALITY_VINTAGE")
    assert not refused.passed
    assert refused.evidence == "CCER:1-100 CCER vintage 2020 < 2021 (reductions on or after 2020-09-22)"
    new = screen(request("CN-SELLER", "CN-BUYER", 100), facts_with(ccer(2021), seller="CN-SELLER", quantity=100), book)
    assert new.verdict == cpb.APPROVED, [r.evidence for r in new.results if not r.passed]
    # The default's year is the same rule read conservatively: the two cannot disagree.
    assert book.default.vintage_floor("CCER") == china.vintage_floor("CCER") == 2021


def test_japan_counts_jcm_credits_from_2021_only() -> None:
    japan = policies().select("JP", "NDC")
    assert japan.reductions_from["JCM"] == date(2021, 1, 1) and japan.vintage_floor("JCM") == 2021
    facts = facts_with(block(vintage=2020))
    refused = result(screen(request(to="JP-BUYER"), facts, policies()), "QUALITY_VINTAGE")
    assert not refused.passed and "JCM vintage 2020 < 2021 (reductions on or after 2021-01-01)" in refused.evidence
