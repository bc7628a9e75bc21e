"""Signed checkpoints of the audit chains (Ed25519).

Every `every` records, compliance signs the chain's head: (jurisdiction, sequence, hash).
A regulator holding the published public key can then check an exported chain offline
(`python -m services.compliance.verify`): the hash chain proves the records follow each
other, the signature proves the venue vouched for the head at that sequence.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# A development key everyone can derive: refused in production (ComplianceSettings).
DEVELOPMENT_SEED = hashlib.sha256(b"tonne development audit signing key").digest()


def checkpoint_message(jurisdiction: str, sequence: int, chain_hash: str) -> bytes:
    """The bytes signed for a checkpoint (canonical: fixed prefix, NUL-separated fields)."""
    return b"\x00".join(
        [b"tonne-audit-checkpoint-v1", jurisdiction.encode(), str(sequence).encode(), chain_hash.encode()]
    )


class Signer:
    def __init__(self, seed: bytes, every: int) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.every = every

    @property
    def public_key(self) -> str:
        """The raw 32-byte public key, base64."""
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def due(self, sequence: int) -> bool:
        return sequence % self.every == 0

    def sign(self, jurisdiction: str, sequence: int, chain_hash: str) -> bytes:
        return self._key.sign(checkpoint_message(jurisdiction, sequence, chain_hash))


def verify(public_key: str, jurisdiction: str, sequence: int, chain_hash: str, signature: bytes) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
    try:
        key.verify(signature, checkpoint_message(jurisdiction, sequence, chain_hash))
    except InvalidSignature:
        return False
    return True
