"""The one registry of the API: group, version, and every kind's names, scope and spec defaults.

Everything else reads the API's names from here: the models (`api/`) build their CRD metadata from
it, the controller watches what it lists, the core, metrics, agent, demo, `plan` and the tests take
their plurals and defaults from it. Free of pydantic, so that `run` and the agent import it cheaply.

Adding a kind: a `KindSpec` here (and in `KINDS`), its model in `api/` (imported in
`api/__init__.py`), its parser and rules in `core/` (one entry in core/site.py's tables), then
`hack/gen-crds.py` writes its CRD, the chart's RBAC resource lists and Chart.yaml's CRD list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GROUP = "stargate.dev"
VERSION = "v1alpha1"
# Spelled out, not formatted, so that the models can use it as a Literal type.
ApiVersion = Literal["stargate.dev/v1alpha1"]
API_VERSION: ApiVersion = "stargate.dev/v1alpha1"
assert f"{GROUP}/{VERSION}" == API_VERSION
# Path prefix of the group's resources on the API server.
GROUP_PATH = f"/apis/{API_VERSION}"
CATEGORY = "stargate"

Scope = Literal["Namespaced", "Cluster"]


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One kind of the API: what kubectl and the API server call it, and its spec defaults."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Scope = "Namespaced"
    # Defaults of spec fields by their path under spec ("site.designPUE"): every default the
    # kind's CRD schema states, no more, no less (the CRD generator refuses a schema that differs,
    # so that a default is never written only in a model).
    defaults: Mapping[str, object] = field(default_factory=dict)
    # One line for catalogues (the chart's CRD list).
    description: str = ""

    @property
    def api_version(self) -> str:
        return API_VERSION

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"

    def default(self, path: str) -> object:
        return self.defaults[path]


# Spec defaults, typed: the core reads them on every recomputation, the models write them into
# the CRD schemas.
DEFAULT_DESIGN_PUE = 1.3
DEFAULT_RESERVE_PERCENT = 5
DEFAULT_RACK_PRIORITY = 500
DEFAULT_SHARE_PERCENT = 100
DEFAULT_CLAIM_PRIORITY = 0
DEFAULT_BASE_POWER_WATTS = 0
DEFAULT_HOST_MEMORY_BYTES = 0
DEFAULT_CURTAILMENT_REASON = ""
DomainType = Literal["Electrical", "Cooling"]
DEFAULT_DOMAIN_TYPE: DomainType = "Electrical"
DEFAULT_DERATE_PERCENT = 80  # NEC's continuous-load rule: a breaker carries 80 % of its rating
DEFAULT_PHASES = 3
DEFAULT_POWER_FACTOR = 1.0
# Oversubscription on measured draw, on the site (spec.power.oversubscription)
# and on a PowerDomain (spec.oversubscription): allocate up to `percent` above the real capacity,
# cap within it once measured power reaches capAtPercent of it, uncap once it has stayed below
# uncapAtPercent for holdSeconds.
DEFAULT_OVERSUBSCRIPTION_PERCENT = 0
DEFAULT_CAP_AT_PERCENT = 95
DEFAULT_UNCAP_AT_PERCENT = 85
DEFAULT_HOLD_SECONDS = 60
_OVERSUBSCRIPTION_DEFAULTS = {
    "percent": DEFAULT_OVERSUBSCRIPTION_PERCENT,
    "capAtPercent": DEFAULT_CAP_AT_PERCENT,
    "uncapAtPercent": DEFAULT_UNCAP_AT_PERCENT,
    "holdSeconds": DEFAULT_HOLD_SECONDS,
}

# Shadow mode (spec.power.enforcement): Enforce applies the limits; Observe computes and reports
# them, and the agents apply none (how a site adopts capping).
Enforcement = Literal["Enforce", "Observe"]
ENFORCE: Enforcement = "Enforce"
OBSERVE: Enforcement = "Observe"
DEFAULT_ENFORCEMENT: Enforcement = ENFORCE

STARGATE_CLUSTER = KindSpec(
    kind="StargateCluster",
    plural="stargateclusters",
    singular="stargatecluster",
    short_names=("sgc",),
    description="An AI data-centre site",
    defaults={"site.designPUE": DEFAULT_DESIGN_PUE, "power.reservePercent": DEFAULT_RESERVE_PERCENT,
              "power.curtailment.reason": DEFAULT_CURTAILMENT_REASON,
              "power.enforcement": DEFAULT_ENFORCEMENT,
              **{f"power.oversubscription.{k}": v for k, v in _OVERSUBSCRIPTION_DEFAULTS.items()}},
)
RACK = KindSpec(
    kind="Rack",
    plural="racks",
    singular="rack",
    short_names=("rk",),
    description="A rack with a power feed and a priority",
    defaults={"priority": DEFAULT_RACK_PRIORITY},
)
POWER_DOMAIN = KindSpec(
    kind="PowerDomain",
    plural="powerdomains",
    singular="powerdomain",
    short_names=("pdom",),
    description="A power or cooling domain: a feed, breaker or cooling loop",
    defaults={
        "type": DEFAULT_DOMAIN_TYPE,
        "deratePercent": DEFAULT_DERATE_PERCENT,
        "electrical.phases": DEFAULT_PHASES,
        "electrical.powerFactor": DEFAULT_POWER_FACTOR,
        **{f"oversubscription.{k}": v for k, v in _OVERSUBSCRIPTION_DEFAULTS.items()},
    },
)
GPU_NODE = KindSpec(
    kind="GPUNode",
    plural="gpunodes",
    singular="gpunode",
    short_names=("gpun",),
    description="A GPU server and its per-GPU power limit",
    defaults={"maintenance": False, "basePowerWatts": DEFAULT_BASE_POWER_WATTS,
              "hostMemoryBytes": DEFAULT_HOST_MEMORY_BYTES},
)
MEMORY_POOL = KindSpec(
    kind="MemoryPool",
    plural="memorypools",
    singular="memorypool",
    short_names=("mpool",),
    description="A pool of HBM, DRAM or CXL memory",
    defaults={"sharePercent": DEFAULT_SHARE_PERCENT},
)
MEMORY_CLAIM = KindSpec(
    kind="MemoryClaim",
    plural="memoryclaims",
    singular="memoryclaim",
    short_names=("mclaim",),
    description="Bytes claimed from a memory pool",
    defaults={"priority": DEFAULT_CLAIM_PRIORITY},
)
GRID_EVENT = KindSpec(
    kind="GridEvent",
    plural="gridevents",
    singular="gridevent",
    short_names=("gev",),
    description="A utility grid event: a curtailment or an outage window",
)
# The per-GPU limits of a group of whole racks, written only by the operator and read by the node
# agents (one watch each, by name).
POWER_LIMIT_SLICE = KindSpec(
    kind="PowerLimitSlice",
    plural="powerlimitslices",
    singular="powerlimitslice",
    short_names=("pls",),
    description="The per-GPU limits of a group of whole racks, written by the operator for its agents",
    defaults={"revision": 0},
)

# Every kind of the group, in the order a site is applied and listed (a parent before its children).
KINDS: tuple[KindSpec, ...] = (
    STARGATE_CLUSTER, RACK, POWER_DOMAIN, GPU_NODE, MEMORY_POOL, MEMORY_CLAIM, GRID_EVENT,
    POWER_LIMIT_SLICE,
)
BY_KIND: dict[str, KindSpec] = {k.kind: k for k in KINDS}
BY_PLURAL: dict[str, KindSpec] = {k.plural: k for k in KINDS}

# status.racks of a StargateCluster and of a PowerDomain: how many racks it holds. A field of the
# API, named once (the core writes it, the metrics and `plan` read it), not the Rack kind's plural.
RACKS_FIELD = "racks"

# Operator settings that are not part of any spec but that several modules state.
DEFAULT_STALE_AFTER_SECONDS = 120.0
# The fail-safe: the active operator renews a Lease per site namespace; an agent
# that sees no renewal for this long applies min(limit, safeLimitWatts) until it does.
FAILSAFE_LEASE_NAME = "stargate-operator"
DEFAULT_LEASE_DURATION_SECONDS = 15
DEFAULT_FAILSAFE_AFTER_SECONDS = 30.0

# Limits in slices: at most this many nodes in one PowerLimitSlice (whole racks), by default, and
# the bounds of the setting (a slice of more than 1,000 entries is a large object for each write).
DEFAULT_SLICE_SIZE = 500
MIN_SLICE_SIZE = 1
MAX_SLICE_SIZE = 1000
# Lower before raise: raises wait for the lowered nodes beneath a constraint to be confirmed, at most
# this long (then they go, with an Event).
DEFAULT_RAISE_AFTER_SECONDS = 30.0
# A node counts as confirmed when its enforced limit is at or below the highest limit assigned to it
# within this period; PowerLimitApplied=False only for a node unconfirmed for longer.
DEFAULT_CONFIRM_GRACE_SECONDS = 60.0
# A status figure that moves with measurements is written at most this often per object, unless a
# condition changes with it.
DEFAULT_MEASURED_REFRESH_SECONDS = 300.0

# Node discovery (`run --discover-nodes`, chart `discovery.enabled`): the Kubernetes Node labels
# that place a Node's GPUNode, by default. The site label's value is the GPUNode's namespace, the
# rack label's its spec.rackRef. Both keys are settings of the operator (and the chart).
DISCOVERY_SITE_LABEL = f"{GROUP}/site"
DISCOVERY_RACK_LABEL = f"{GROUP}/rack"
# On a discovered GPUNode: where its power range came from ("nvml", the agent's reading, or
# "product-table").
POWER_RANGE_ANNOTATION = f"{GROUP}/power-range-source"
# On a GPUNode, read by `agent --simulate`: how many of its GPUs the simulator fails.
FAILED_GPUS_ANNOTATION = f"{GROUP}/simulate-failed-gpus"


def plural_of(kind: str) -> str:
    return BY_KIND[kind].plural


def kind_of(plural: str) -> str:
    return BY_PLURAL[plural].kind
