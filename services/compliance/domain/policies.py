"""Screening policies as data (DOMAIN.md §6 "quality (policy)"; issue 11 item 3): one
TOML file per acquiring jurisdiction and use under services/compliance/policies/, named
`<JUR>-<USE>.toml`, plus `default.toml` for every other acquirer. Each file is a whole
policy (nothing is inherited: the file a decision names is all that decided it), carries
its `version`, and is validated against the models below when the service starts; a bad
file stops it, naming the file and the field. Every decision records `<id>@<version>`.

Reading the files (`Policy.load`, `Policies.load`) is the only I/O here; the models and
`Policies.select` are pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from tonne.v1 import registry_pb2 as rpb

DIRECTORY = Path(__file__).parent.parent / "policies"
DEFAULT = "default"

Party = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]  # ISO 3166-1 alpha-2
# What the acquiring party uses the units for, as an authorization can cover it
# (registry.proto AuthorizedUse; NDC_AND_OIMP covers both).
Use = Literal["NDC", "OIMP"]


def _standard(name: str) -> str:
    if name not in rpb.Standard.DESCRIPTOR.values_by_name or rpb.Standard.Value(name) == rpb.STANDARD_UNSPECIFIED:
        raise ValueError(f"not a standard of registry.proto: {name}")
    return name


StandardName = Annotated[str, AfterValidator(_standard)]  # a registry.proto Standard, by name
Year = Annotated[int, Field(strict=True, ge=1, le=9999)]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.-]{1,32}$")]
Methodology = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class PolicyError(ValueError):
    """A policy file that does not validate: the message names the file and the field."""


def first_whole_vintage(cutoff: date) -> int:
    """The oldest vintage all of whose reductions are dated on or after `cutoff`.

    A block carries a vintage year, not the dates of its reductions: vintage Y may hold
    any day of Y. Read conservatively, a year that starts before the cutoff may hold
    reductions from before it and is refused (CCER's 2020-09-22 admits vintage 2021 on,
    not 2020), so a date cutoff never lets through a tonne the rule excludes."""
    return cutoff.year if (cutoff.month, cutoff.day) == (1, 1) else cutoff.year + 1


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MethodologyLists(_Data):
    denied: frozenset[Methodology] = frozenset()


class Policy(_Data):
    version: Version
    # Whose acquisitions for which use this file screens; both absent in `default.toml`.
    jurisdiction: Party | None = None
    use: Use | None = None
    # default.toml only: the use assumed when a screening request names none (today's
    # ScreenTransfer never does).
    cross_border_use: Use | None = None
    # The oldest vintage accepted per standard, as a year or as the date reductions must
    # be on or after (`first_whole_vintage`); one or the other per standard. A standard
    # in neither is refused: no policy, no pass.
    min_vintage: dict[StandardName, Year] = {}
    reductions_from: dict[StandardName, date] = {}
    methodology: MethodologyLists = MethodologyLists()

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if (self.jurisdiction is None) != (self.use is None):
            raise ValueError("jurisdiction and use go together (both absent: the default policy)")
        if self.jurisdiction is None and self.cross_border_use is None:
            raise ValueError("the default policy names cross_border_use")
        if self.jurisdiction is not None and self.cross_border_use is not None:
            raise ValueError("cross_border_use is the default policy's; this file's use is `use`")
        both = sorted(set(self.min_vintage) & set(self.reductions_from))
        if both:
            raise ValueError(f"min_vintage and reductions_from both set for {', '.join(both)}")
        return self

    @property
    def name(self) -> str:
        """`default`, or `<JUR>-<USE>`: the file's name without `.toml`."""
        return DEFAULT if self.jurisdiction is None else f"{self.jurisdiction}-{self.use}"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def serves(self) -> Use:
        """The use this policy screens for when used on its own."""
        use = self.use or self.cross_border_use
        assert use is not None  # _coherent
        return use

    def vintage_floor(self, standard: str) -> int | None:
        """The oldest vintage of `standard` accepted; None when the policy names none."""
        if standard in self.reductions_from:
            return first_whole_vintage(self.reductions_from[standard])
        return self.min_vintage.get(standard)

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        """One policy file, validated (the default policy when no path is given)."""
        path = path or DIRECTORY / f"{DEFAULT}.toml"
        try:
            with path.open("rb") as f:
                policy = cls.model_validate(tomllib.load(f))
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"{path}: not TOML: {error}") from error
        except ValidationError as error:
            raise PolicyError(f"{path}: {_fields(error)}") from error
        if path.stem != policy.name:
            raise PolicyError(f"{path}: jurisdiction and use make it {policy.name}.toml")
        return policy


def _fields(error: ValidationError) -> str:
    """Each failing field by its path in the file (`min_vintage.CCER`), with the reason."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '(file)'}: {e['msg']}" for e in error.errors(include_url=False)
    )


class Policies:
    """Every screening policy, by acquiring jurisdiction and use, and the default."""

    def __init__(self, default: Policy, specific: Iterable[Policy] = ()) -> None:
        if default.jurisdiction is not None:
            raise PolicyError(f"{default.id} is no default policy")
        self.default = default
        self._by_key: dict[tuple[str, str], Policy] = {}
        for policy in specific:
            if policy.jurisdiction is None or policy.use is None:
                raise PolicyError(f"{policy.id}: a second default policy")
            key = (policy.jurisdiction, policy.use)
            if key in self._by_key:
                raise PolicyError(f"two policies for {policy.name}")
            self._by_key[key] = policy

    def select(self, jurisdiction: str | None, use: Use) -> Policy:
        """The acquiring jurisdiction's policy for `use`; the default when it has none (or
        the acquirer is unknown: ACCOUNTS_KNOWN refuses that transfer anyway)."""
        if jurisdiction is None:
            return self.default
        return self._by_key.get((jurisdiction, use), self.default)

    @property
    def versions(self) -> Mapping[str, str]:
        """Policy name -> version, for every policy held."""
        return {p.name: p.version for p in (self.default, *self._by_key.values())}

    @classmethod
    def load(cls, directory: Path = DIRECTORY) -> Policies:
        """Every `*.toml` of `directory`, validated; it must hold `default.toml`."""
        loaded = [Policy.load(path) for path in sorted(directory.glob("*.toml"))]
        defaults = [p for p in loaded if p.jurisdiction is None]
        if not defaults:
            raise PolicyError(f"{directory}: no {DEFAULT}.toml")
        return cls(defaults[0], [p for p in loaded if p.jurisdiction is not None])
