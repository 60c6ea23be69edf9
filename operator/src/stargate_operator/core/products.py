"""The one table of GPU products: what a node of each model holds and draws.

Read by the samples generator (hack/gen-samples.py), the synthetic sites of the benchmarks
(`stargate_operator.fixtures.synth`) and node discovery (GPU Feature Discovery's
`nvidia.com/gpu.product` label names the model; the agent's NVML reading overrides the power range).
Every row names its public source. Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1_000_000_000
TB = 1_000 * GB


@dataclass(frozen=True, slots=True)
class GPUProduct:
    model: str  # the name GPUNode.spec.gpu.model carries
    gpus_per_node: int
    hbm_bytes: int  # HBM per GPU
    min_power_w: int  # lowest settable power limit per GPU
    max_power_w: int  # highest settable limit per GPU (the TDP)
    default_power_w: int  # the limit the GPU boots with
    base_power_w: int  # everything on the node but the GPUs: CPUs, NICs, fans, DPUs
    host_bytes: int  # host memory per node
    node: str  # the server it describes
    source: str  # where the figures come from
    # Substrings of GFD's nvidia.com/gpu.product label that name this model (matched case-blind).
    product_labels: tuple[str, ...] = ()


PRODUCTS: tuple[GPUProduct, ...] = (
    GPUProduct(
        model="GB200", gpus_per_node=4, hbm_bytes=192 * GB, min_power_w=400, max_power_w=1200,
        default_power_w=1200, base_power_w=1800, host_bytes=960 * GB,
        node="GB200 NVL72 compute tray (2 Grace CPUs, 4 Blackwell GPUs)",
        source="NVIDIA GB200 NVL72 datasheet (GTC 2024): 72 GPUs in 18 compute trays, up to 13.5 TB "
               "HBM3e and 17 TB LPDDR5X a rack, about 120-132 kW a rack",
        product_labels=("GB200",),
    ),
    GPUProduct(
        model="B200", gpus_per_node=8, hbm_bytes=192 * GB, min_power_w=200, max_power_w=1000,
        default_power_w=1000, base_power_w=4300, host_bytes=2 * TB,
        node="HGX / DGX B200 (8 GPUs)",
        source="NVIDIA DGX B200 datasheet: 8 B200 GPUs, about 14.3 kW at most, 2 TB host memory; "
               "B200 about 1,000 W and 192 GB HBM3e",
        product_labels=("B200",),
    ),
    GPUProduct(
        model="H100-SXM", gpus_per_node=8, hbm_bytes=80 * GB, min_power_w=200, max_power_w=700,
        default_power_w=700, base_power_w=4600, host_bytes=2 * TB,
        node="DGX H100 (8 GPUs)",
        source="NVIDIA H100 SXM datasheet: 700 W, 80 GB HBM3, power limit settable from about 200 W; "
               "DGX H100 about 10.2 kW at most, 2 TB DDR5",
        product_labels=("H100-SXM", "H100 80GB HBM3", "H100"),
    ),
    GPUProduct(
        model="H200-SXM", gpus_per_node=8, hbm_bytes=141 * GB, min_power_w=200, max_power_w=700,
        default_power_w=700, base_power_w=4600, host_bytes=2 * TB,
        node="DGX H200 (8 GPUs)",
        source="NVIDIA H200 datasheet: 700 W, 141 GB HBM3e; DGX H200 as DGX H100",
        product_labels=("H200",),
    ),
)

BY_MODEL: dict[str, GPUProduct] = {p.model: p for p in PRODUCTS}


def product_for_label(label: str) -> GPUProduct | None:
    """The product GFD's `nvidia.com/gpu.product` label names (e.g. `NVIDIA-H100-80GB-HBM3`,
    `NVIDIA-GB200`), or None. The most specific match wins (GB200 before B200)."""
    text = label.upper().replace("_", "-")
    best: tuple[int, GPUProduct] | None = None
    for product in PRODUCTS:
        for pattern in product.product_labels:
            needle = pattern.upper().replace(" ", "-")
            if needle in text and (best is None or len(needle) > best[0]):
                best = (len(needle), product)
    return best[1] if best else None
