"""StargateCluster: one site, its power envelope and its grid context."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from stargate_operator.api.common import (
    AGE_COLUMN,
    READY_COLUMN,
    KindInfo,
    Model,
    Resource,
    StatusBase,
    column,
)


class Site(Model):
    region: str = Field(min_length=1, max_length=128, description="Region or campus the site belongs to.")
    kind: Literal["Onshore", "Floating"] = Field(description="Onshore building or floating platform.")
    cooling: Literal["Air", "DirectLiquid", "Immersion", "Seawater"] = Field(
        description="How the IT load is cooled."
    )
    design_pue: float = Field(
        default=1.3,
        ge=1.0,
        le=3.0,
        alias="designPUE",
        description="Design power usage effectiveness: facility power divided by IT power.",
    )


class Curtailment(Model):
    percent: int = Field(ge=0, le=100, description="Share of the site budget to shed while it applies.")
    reason: str = Field(default="", max_length=1024, description="Why the grid asked for it, for people.")
    until: datetime | None = Field(
        default=None, description="RFC 3339 time after which the curtailment no longer applies."
    )


class SitePower(Model):
    it_capacity_watts: int = Field(
        gt=0, description="Power the site can deliver to IT equipment, in watts."
    )
    reserve_percent: int = Field(
        default=5, ge=0, le=50, description="Share of the IT capacity held back and never allocated."
    )
    curtailment: Curtailment | None = Field(
        default=None, description="A demand-response request from the grid, if any."
    )


class Carbon(Model):
    grid_intensity_grams_per_k_wh: float | None = Field(
        default=None,
        ge=0,
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


class ClusterPowerStatus(Model):
    budget_watts: int = Field(default=0, ge=0, description="Usable site budget after reserve and curtailment.")
    floor_watts: int = Field(default=0, ge=0, description="Sum of rack floors.")
    demand_watts: int = Field(default=0, ge=0, description="Sum of rack demands.")
    allocated_watts: int = Field(default=0, ge=0, description="Sum of rack budgets.")
    measured_watts: int = Field(default=0, ge=0, description="Sum of measured node power (fresh telemetry).")
    facility_watts: int = Field(
        default=0, ge=0, description="Measured (or allocated where nothing is measured) times designPUE."
    )


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

    kind_info = KindInfo(
        kind="StargateCluster",
        plural="stargateclusters",
        singular="stargatecluster",
        short_names=["sgc"],
        printer_columns=[
            column("Region", ".spec.site.region"),
            column("Racks", ".status.racks", "integer"),
            column("GPUs", ".status.gpus.total", "integer"),
            column("Healthy", ".status.gpus.healthy", "integer"),
            column("Budget-W", ".status.power.budgetWatts", "integer"),
            column("Allocated-W", ".status.power.allocatedWatts", "integer"),
            column("Demand-W", ".status.power.demandWatts", "integer"),
            column("Overcommitted", '.status.conditions[?(@.type=="PowerOvercommitted")].status'),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["StargateCluster"] = Field(default="StargateCluster", description="Kind of the object.")
    spec: StargateClusterSpec = Field(description="Desired state of the site.")
    status: StargateClusterStatus | None = Field(default=None, description="Observed state of the site.")
