"""Pieces shared by every kind: the base model, names, conditions, object metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "stargate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "stargate"

# DNS-1123 subdomain, the rule for names of namespaced objects.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Name of an object in the same namespace (DNS-1123 subdomain).",
    ),
]


class Model(BaseModel):
    """camelCase on the wire, unknown fields refused (as the API server's strict validation does)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        use_enum_values=True,
    )


class Condition(Model):
    """A condition in the Kubernetes convention."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(
        default="",
        description="Machine-readable reason for the last transition, in CamelCase.",
        max_length=1024,
    )
    message: str = Field(
        default="", description="Human-readable message with details of the transition.", max_length=32768
    )
    last_transition_time: datetime | None = Field(
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
        description="Observed conditions; Ready summarises them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ObjectMeta(Model):
    """The part of metadata the models read; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="Name of the object."
    )
    namespace: str = Field(default="default", description="Namespace of the object.")


class KindInfo(BaseModel):
    """CRD metadata for one kind: names, short names and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    printer_columns: list[dict[str, Any]]


class Resource(Model):
    """Base of every top-level kind."""

    kind_info: ClassVar[KindInfo]

    api_version: Literal["stargate.dev/v1alpha1"] = Field(
        default=API_VERSION, description="APIVersion of the object."
    )
    metadata: ObjectMeta = Field(description="Standard object metadata.")


def column(name: str, json_path: str, type_: str = "string", description: str = "", priority: int = 0
           ) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


READY_COLUMN = column("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready summary")
AGE_COLUMN = column("Age", ".metadata.creationTimestamp", "date")
