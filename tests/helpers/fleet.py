"""Simulated node agents on the real API server, for integration tests: the real `Fleet` (it watches
the namespace's GPUNodes and PowerLimitSlices and writes each node's telemetry), in a thread of its
own with its own event loop and client, its nodes' GPUs simulated in this process so that a test can
read what every GPU enforces at any instant.

``FleetThread(control_plane, namespace, backend_factory[, fleet_class], interval=...)``:
``start()``, ``stop()``, ``backends()`` (node name -> its backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Self

from stargate_operator.agent.backend import GPUBackend
from stargate_operator.agent.runner import Fleet
from stargate_operator.client import KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane


class FleetThread:
    def __init__(self, control_plane: LocalControlPlane, namespace: str, backend_factory: Any,
                 fleet_class: type[Fleet] = Fleet, **fleet_args: Any) -> None:
        self.fleet_class = fleet_class  # an older agent's Fleet, for the version-skew tests
        self.control_plane = control_plane
        self.namespace = namespace
        self.backend_factory = backend_factory
        self.fleet_args = fleet_args
        self.fleet: Fleet | None = None
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)
        self._stop: asyncio.Event | None = None

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        client = KubeClient.from_kubeconfig(str(self.control_plane.kubeconfig), max_connections=16)
        self.fleet = self.fleet_class(client, self.namespace, self.backend_factory, **self.fleet_args)
        task = asyncio.create_task(self.fleet.run())
        self.ready.set()
        await self._stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()

    def start(self) -> Self:
        self.thread.start()
        assert self.ready.wait(10), "the fleet did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)

    def backends(self) -> dict[str, GPUBackend]:
        assert self.fleet is not None
        return {name: agent.backend for name, agent in list(self.fleet.agents.items())}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
