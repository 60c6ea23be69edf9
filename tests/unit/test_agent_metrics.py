"""The agent's /metrics: each node's power, enforced limit and healthy GPUs, per node and per GPU;
no node label from an agent of one node (Prometheus takes the node from the scrape target)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from stargate_operator.agent.backend import GPUReading, NodeReading
from stargate_operator.agent.exposition import node_figures
from stargate_operator.agent.runner import NodeAgent
from stargate_operator.client import KubeClient


def agent(name: str, reading: NodeReading | None) -> NodeAgent:
    a = NodeAgent(KubeClient.__new__(KubeClient), "ns", name, backend=None)  # type: ignore[arg-type]
    a.obj = {"spec": {"basePowerWatts": 1000}}
    a.last_reading = reading
    return a


READING = NodeReading((GPUReading(0, power_watts=400.0, enforced_limit_watts=500.0),
                       GPUReading(1, power_watts=350.0, healthy=False, enforced_limit_watts=450.0)))


def text(agents: list[NodeAgent], per_node: bool) -> str:
    class C(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return node_figures(agents, per_node)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(C())
    return generate_latest(registry).decode()


def test_one_nodes_agent_exports_no_node_label() -> None:
    out = text([agent("n1", READING)], per_node=False)
    assert "stargate_agent_node_power_watts 1750.0" in out
    assert "stargate_agent_node_enforced_limit_watts 500.0" in out  # its highest GPU's
    assert "stargate_agent_node_healthy_gpus 1.0" in out
    assert 'stargate_agent_gpu_power_watts{gpu="1"} 350.0' in out
    assert 'stargate_agent_gpu_enforced_limit_watts{gpu="0"} 500.0' in out
    assert "gpunode" not in out and "n1" not in out


def test_a_simulated_fleet_names_its_nodes_and_skips_unread_ones() -> None:
    out = text([agent("n1", READING), agent("n2", None)], per_node=True)
    assert 'stargate_agent_node_power_watts{gpunode="n1"} 1750.0' in out
    assert 'stargate_agent_gpu_power_watts{gpu="0",gpunode="n1"} 400.0' in out
    assert "n2" not in out
