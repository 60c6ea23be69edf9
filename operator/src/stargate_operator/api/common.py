"""Pieces shared by every kind: the base model, names, conditions, object metadata, CEL rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from stargate_operator.kinds import (
    API_VERSION,
    CATEGORY,
    GROUP,
    STARGATE_CLUSTER,
    VERSION,
    ApiVersion,
    KindSpec,
)

__all__ = ["API_VERSION", "CATEGORY", "GROUP", "VERSION"]

# DNS-1123 subdomain, the rule for names of namespaced objects (and of Nodes).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Upper bounds that no real site reaches, so that a typo (an extra three zeros) is refused and no sum
# the core computes can overflow an int64 on the way to the API server.
MAX_SITE_WATTS = 100_000_000_000  # 100 GW: Abilene is about 1.2 GW
MAX_RACK_WATTS = 10_000_000  # 10 MW: a GB200 NVL72 rack is about 132 kW
MAX_NODE_BASE_WATTS = 1_000_000  # 1 MW for everything on a node but its GPUs
MAX_GPU_WATTS = 10_000  # 10 kW per GPU: a B200 is about 1 kW
MAX_GPU_MEMORY_BYTES = 2**44  # 16 TiB of HBM per GPU: a B200 has 192 GB
MAX_HOST_MEMORY_BYTES = 2**50  # 1 PiB of host memory per node: a DGX has 2 TB
MAX_POOL_BYTES = 2**60  # 1 EiB
MAX_PRIORITY_MAGNITUDE = 1_000_000_000

ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Name of an object in the same namespace (DNS-1123 subdomain).",
    ),
]

# The site an object belongs to: spec.clusterRef of a Rack, PowerDomain, MemoryPool or GridEvent.
ClusterRef = Annotated[
    ObjectName, Field(description=f"Name of the {STARGATE_CLUSTER.kind} in this namespace.")
]

# A rollup of the GPUNodes' telemetry (status.power.measuredWatts of a site and of a rack).
MeasuredNodesWatts = Annotated[
    int, Field(ge=0, description="Sum of measured node power (fresh telemetry), in watts.")
]


def limits_confirmed_field(scope: str) -> Any:
    """status.power.limitsConfirmed of a site or a rack (`scope`): the nodes whose limit is enforced."""
    return Field(
        default=0,
        ge=0,
        description=f"GPU nodes of the {scope} whose agent reports their assigned per-GPU limit as the one "
        "the GPUs enforce (condition PowerLimitApplied=True).",
    )


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_string(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise PydanticCustomError(
            "rfc3339", "must be an RFC 3339 date-time with an offset, such as 2026-01-31T18:00:00Z"
        )
    return value


def _aware(value: datetime) -> datetime:
    # YAML may give a naive datetime; the API server only takes date-times with an offset: read UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# A date-time as the API server's `format: date-time` takes it: RFC 3339 with an offset.
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_string), AfterValidator(_aware), Field(strict=False)]


class Model(BaseModel):
    """camelCase on the wire, unknown fields refused, no type coercion: as the API server validates.

    Strict: a string where a number belongs ("4") is refused, as `kubectl apply` would refuse it.
    Python code may build models by field name; manifests are validated by alias only (see load.py).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=False,
        use_enum_values=True,
    )


def with_cel(*rules: dict[str, str]) -> ConfigDict:
    """The base model configuration plus CEL rules (x-kubernetes-validations) for the CRD schema."""
    config = Model.model_config.copy()
    config["json_schema_extra"] = {"x-kubernetes-validations": cast(list[JsonValue], list(rules))}
    return config


def cel_rule(rule: str, message: str, field_path: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    """One x-kubernetes-validations entry. Every rule is mirrored by a model_validator (cross_field)."""
    return {"rule": rule, "message": message, "fieldPath": field_path, "reason": reason}


def cross_field(field: str, message: str) -> PydanticCustomError:
    """The offline mirror of a CEL rule's refusal. `field` is the wire name of the offending field,
    relative to the model that holds the rule; the manifest loader appends it to the error's path."""
    return PydanticCustomError("cross_field", "{message}", {"field": field, "message": message})


def _neither(first: str, second: str) -> str:
    return f"exactly one of {first} or {second} is needed: neither is set"


def _both(first: str, second: str) -> str:
    return f"exactly one of {first} or {second} may be set: both are"


def exactly_one_rules(first: str, second: str) -> tuple[dict[str, str], dict[str, str]]:
    """CEL rules for two optional fields (wire names) of which exactly one must be set: neither is
    refused on the first, both on the second. check_exactly_one is their model_validator mirror."""
    return (
        cel_rule(f"has(self.{first}) || has(self.{second})", _neither(first, second), f".{first}",
                 "FieldValueRequired"),
        cel_rule(f"!(has(self.{first}) && has(self.{second}))", _both(first, second), f".{second}"),
    )


def check_exactly_one(model: BaseModel, first: str, second: str) -> None:
    """The offline mirror of exactly_one_rules(first, second), on a model holding both fields."""
    by_alias = {info.alias or name: name for name, info in type(model).model_fields.items()}
    first_set, second_set = (getattr(model, by_alias[f]) is not None for f in (first, second))
    if not first_set and not second_set:
        raise cross_field(first, _neither(first, second))
    if first_set and second_set:
        raise cross_field(second, _both(first, second))


class Condition(Model):
    """A condition in the Kubernetes convention."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready.", min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(
        default="",
        description="Machine-readable reason for the last transition, in CamelCase.",
        max_length=1024,
    )
    message: str = Field(
        default="", description="Human-readable message with details of the transition.", max_length=32768
    )
    last_transition_time: Timestamp | None = Field(
        default=None, description="Last time the condition changed from one status to another."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the condition was computed from."
    )


class StatusBase(Model):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Observed conditions; Ready summarises them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ObjectMeta(Model):
    """The part of metadata the models read; the rest passes through untouched."""

    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="Name of the object.")
    namespace: str = Field(default="default", description="Namespace of the object.")


class KindInfo(BaseModel):
    """CRD metadata for one kind: its names (from the registry, kinds.py) and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    scope: str
    printer_columns: list[dict[str, Any]]
    # The registry's spec defaults by path; the CRD generator checks the schema's against them.
    defaults: dict[str, Any]

    @classmethod
    def of(cls, spec: KindSpec, printer_columns: list[dict[str, Any]]) -> KindInfo:
        return cls(kind=spec.kind, plural=spec.plural, singular=spec.singular,
                   short_names=list(spec.short_names), scope=spec.scope,
                   printer_columns=printer_columns, defaults=dict(spec.defaults))


class Resource(Model):
    """Base of every top-level kind."""

    kind_info: ClassVar[KindInfo]

    api_version: ApiVersion = Field(default=API_VERSION, description="APIVersion of the object.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")


def column(
    name: str, json_path: str, type_: str = "string", description: str = "", priority: int = 0
) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


def condition_column(name: str, condition: str, description: str, priority: int = 0) -> dict[str, Any]:
    return column(
        name,
        f'.status.conditions[?(@.type=="{condition}")].status',
        description=description,
        priority=priority,
    )


READY_COLUMN = condition_column("Ready", "Ready", "Ready condition: the summary.")
AGE_COLUMN = column("Age", ".metadata.creationTimestamp", "date", "Time since creation.")
# The column of status.power.limitsConfirmed (limits_confirmed_field), on a site and on a rack.
CONFIRMED_COLUMN = column("Confirmed", ".status.power.limitsConfirmed", "integer",
                          "Nodes whose agent reports the assigned limit enforced.", priority=1)
