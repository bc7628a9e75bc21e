"""Small builders for domain tests."""

from __future__ import annotations

from google.protobuf.message import Message

from services.registry.domain.memory import MemoryRegistry
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as pb


def open_account(account_id: str, jurisdiction: str, type: pb.AccountType.ValueType = pb.HOLDING) -> pb.OpenAccount:
    return pb.OpenAccount(account_id=account_id, holder=f"holder of {account_id}", jurisdiction=jurisdiction, type=type)


def issuance(
    issuance_id: str,
    account_id: str,
    start: int,
    end: int,
    *,
    namespace: str = "JCM-TH",
    host: str = "TH",
    vintage: int = 2024,
    authorization_id: str = "",
    standard: pb.Standard.ValueType = pb.JCM,
    methodology: str = "JCM_TH_AM014",
    project_id: str = "TH-FSOLAR-1",
) -> pb.RecordIssuance:
    return pb.RecordIssuance(
        issuance_id=issuance_id,
        account_id=account_id,
        block=pb.SerialBlock(
            namespace=namespace,
            start=start,
            end=end,
            attributes=pb.UnitAttributes(
                standard=standard,
                host_party=host,
                project_id=project_id,
                methodology=methodology,
                vintage=vintage,
                authorization_id=authorization_id,
                issuing_registry=f"{host}-registry",
            ),
        ),
    )


def loa(authorization_id: str = "LOA-TH-1", quantity: int = 4000) -> pb.RecordAuthorization:
    return pb.RecordAuthorization(
        authorization_id=authorization_id,
        host_party="TH",
        quantity=quantity,
        use=pb.NDC,
        first_transfer=pb.AT_FIRST_INTERNATIONAL_TRANSFER,
        vintage_from=2021,
        vintage_to=2030,
    )


def screened(
    registry: MemoryRegistry, command: Message, verdict: cpb.Verdict.ValueType = cpb.APPROVED
) -> list[Message]:
    """`command` proposed, and answered by the transaction log: its reservation (an
    issuance has none), then what the answer completes it with."""
    *reserved, proposal = registry.execute(command)
    assert isinstance(proposal, pb.ScreenProposal), proposal
    assert registry.accounts[proposal.account_id].screening == {proposal.proposal_id: proposal}
    failed = [] if verdict == cpb.APPROVED else [cpb.RuleResult(code="DOUBLE_USE", evidence="JCM-TH:1-1 used")]
    answer = cpb.ProposalScreened(
        proposal_id=proposal.proposal_id, account_id=proposal.account_id, verdict=verdict, results=failed
    )
    return [*reserved, *registry.execute(answer)]
