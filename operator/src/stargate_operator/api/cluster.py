"""StargateCluster: one site, its power envelope and its grid context."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stargate_operator import kinds
from stargate_operator.api.common import (
    AGE_COLUMN,
    CONFIRMED_COLUMN,
    MAX_SITE_WATTS,
    READY_COLUMN,
    KindInfo,
    MeasuredNodesWatts,
    Model,
    Resource,
    StatusBase,
    Timestamp,
    column,
    condition_column,
    limits_confirmed_field,
)
from stargate_operator.api.oversubscription import CappingStatus, Oversubscription
from stargate_operator.api.ramp import DOWN, UP, ramp_field


class Site(Model):
    region: str = Field(
        min_length=1, max_length=128, description="Region or campus the site belongs to, e.g. us-tx-abilene."
    )
    kind: Literal["Onshore", "Floating"] = Field(description="Onshore building or floating platform.")
    cooling: Literal["Air", "DirectLiquid", "Immersion", "Seawater"] = Field(
        description="How the IT load is cooled."
    )
    design_pue: float = Field(
        default=kinds.DEFAULT_DESIGN_PUE,
        ge=1.0,
        le=3.0,
        alias="designPUE",
        description="Design power usage effectiveness: facility power divided by IT power.",
    )


class Curtailment(Model):
    percent: int = Field(
        ge=0, le=100, description="Share of the site's usable power to shed while it applies (0 to 100)."
    )
    reason: str = Field(
        default="", max_length=1024, description="Why the grid asked for it, for people (e.g. the event ID)."
    )
    until: Timestamp | None = Field(
        default=None,
        description="RFC 3339 time after which the curtailment no longer applies; open-ended when unset.",
    )


class SitePower(Model):
    it_capacity_watts: int = Field(
        gt=0, le=MAX_SITE_WATTS, description="Power the site can deliver to IT equipment, in watts."
    )
    reserve_percent: int = Field(
        default=kinds.DEFAULT_RESERVE_PERCENT,
        ge=0,
        le=50,
        description="0 to 50: share of the IT capacity held back, never allocated.",
    )
    curtailment: Curtailment | None = Field(
        default=None, description="A demand-response request from the grid, if any."
    )
    oversubscription: Oversubscription | None = Field(
        default=None,
        description="Allocate above the site budget on measured draw, capping reactively once the draw "
        "nears the budget; none when unset.",
    )
    ramp_down_watts_per_second: int | None = ramp_field(*DOWN)
    ramp_up_watts_per_second: int | None = ramp_field(*UP)


class Carbon(Model):
    grid_intensity_grams_per_k_wh: float | None = Field(
        default=None,
        ge=0,
        le=10_000,
        alias="gridIntensityGramsPerKWh",
        description="Carbon intensity of the grid supply, in grams CO2e per kWh.",
    )


class StargateClusterSpec(Model):
    site: Site = Field(description="Where and how the site is built.")
    power: SitePower = Field(description="The site's power envelope.")
    carbon: Carbon | None = Field(default=None, description="Grid carbon intensity, for reporting.")


class GPUCount(Model):
    total: int = Field(default=0, ge=0, description="GPUs in total.")
    healthy: int = Field(default=0, ge=0, description="GPUs counted healthy.")


class MemoryTotals(Model):
    hbm_bytes: int = Field(default=0, ge=0, description="HBM of healthy GPUs, in bytes.")
    host_bytes: int = Field(default=0, ge=0, description="Host DRAM of nodes not in maintenance, in bytes.")


class CurtailmentRamp(Model):
    """When the site's curtailment began and ended, as the operator saw them: its ramp's times (a
    curtailment has no start of its own). Kept only while a ramp rate is set."""

    percent: int = Field(ge=0, le=100, description="The curtailment these times belong to.")
    since: Timestamp = Field(description="When the operator first saw it: the descent starts here.")
    lifted_at: Timestamp | None = Field(
        default=None, description="When it was removed or its until passed: the rise starts here.")


class ClusterPowerStatus(Model):
    budget_watts: int = Field(
        default=0, ge=0, description="Usable site budget after reserve and curtailment, in watts."
    )
    floor_watts: int = Field(default=0, ge=0, description="Sum of rack floors, in watts.")
    demand_watts: int = Field(default=0, ge=0, description="Sum of rack demands, in watts.")
    allocated_watts: int = Field(default=0, ge=0, description="Sum of rack budgets, in watts.")
    measured_watts: MeasuredNodesWatts = 0
    capping: CappingStatus | None = Field(
        default=None,
        description="Reactive capping of the site budget, while spec.power.oversubscription is set.",
    )
    facility_watts: int = Field(
        default=0, ge=0, description="Measured (or allocated where nothing is measured) times designPUE."
    )
    ramp_watts: int | None = Field(
        default=None, ge=0,
        description="While a ramp bounds the site (spec.power.ramp*WattsPerSecond): the capacity its "
        "envelope allows now, below budgetWatts.")
    curtailment: CurtailmentRamp | None = Field(
        default=None, description="The curtailment's ramp times, while a ramp rate is set.")
    limits_confirmed: int = limits_confirmed_field("site")


class StargateClusterStatus(StatusBase):
    racks: int = Field(default=0, ge=0, description="Racks of this site.")
    nodes: int = Field(default=0, ge=0, description="GPU nodes of this site.")
    gpus: GPUCount = Field(default_factory=GPUCount, description="GPU counts.")
    memory: MemoryTotals = Field(default_factory=MemoryTotals, description="Memory totals.")
    power: ClusterPowerStatus = Field(default_factory=ClusterPowerStatus, description="Power figures.")
    carbon_grams_per_hour: float | None = Field(
        default=None, ge=0, description="Facility kW times grid intensity, in grams CO2e per hour."
    )


class StargateCluster(Resource):
    """A site: its power envelope, cooling and grid context, and the rollup of its racks."""

    kind_info = KindInfo.of(
        kinds.STARGATE_CLUSTER,
        [
            column("Region", ".spec.site.region", description="Region or campus."),
            column("Site", ".spec.site.kind", description="Onshore or Floating.", priority=1),
            column("Cooling", ".spec.site.cooling", description="How the IT load is cooled.", priority=1),
            column("Racks", ".status.racks", "integer", "Racks of the site."),
            column("Nodes", ".status.nodes", "integer", "GPU nodes of the site.", priority=1),
            column("Healthy", ".status.gpus.healthy", "integer", "GPUs counted healthy."),
            column("GPUs", ".status.gpus.total", "integer", "GPUs in total."),
            column("Budget-W", ".status.power.budgetWatts", "integer", "Usable power."),
            column("Demand-W", ".status.power.demandWatts", "integer", "What the racks ask for."),
            column("Allocated-W", ".status.power.allocatedWatts", "integer", "Sum of rack budgets."),
            column("Measured-W", ".status.power.measuredWatts", "integer", "Measured IT power.", priority=1),
            CONFIRMED_COLUMN,
            column(
                "Facility-W",
                ".status.power.facilityWatts",
                "integer",
                "IT power times design PUE.",
                priority=1,
            ),
            column(
                "Curtail-%",
                ".spec.power.curtailment.percent",
                "integer",
                "Demand-response curtailment.",
                priority=1,
            ),
            condition_column("Overcommitted", "PowerOvercommitted", "Rack floors exceed the budget."),
            condition_column("Capping", "Capping", "Allocating within the real budget on measured draw.",
                             priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["StargateCluster"] = Field(default="StargateCluster", description="Kind of the object.")
    spec: StargateClusterSpec = Field(description="Desired state of the site.")
    status: StargateClusterStatus | None = Field(default=None, description="Observed state of the site.")
