"""The engine without a server: an in-memory API (lists, watches that echo every write, status patches,
applies, creates, deletes; failures on demand) and clocks the test moves by hand.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from stargate_operator.client import ApiError, ApiResource
from stargate_operator.controller.engine import Engine, EngineSettings
from stargate_operator.controller.slot import Controller
from stargate_operator.core.statusdiff import apply_merge_patch
from stargate_operator.fixtures.synth import SYNTH_NOW

Key = tuple[str, str, str]


SETTINGS = EngineSettings(coalesce_delay=0.1, max_delay=1.0, retry_delay=2.0, write_concurrency=4)


class Clocks:
    """Monotonic seconds and the wall clock, moved together by `advance`."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.wall0 = SYNTH_NOW

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeApi:
    """The API server's part the engine uses, in memory. Every write bumps the resourceVersion and
    sends its watch event (the echo), as the real one does. `fail(verb, name, status)` makes the
    next such call fail."""

    def __init__(self, objects: list[dict[str, Any]], plurals: Mapping[str, str]) -> None:
        self._rv = itertools.count(2000)
        self.kind_of = dict(plurals)  # plural -> kind
        self.objects: dict[Key, dict[str, Any]] = {}
        for o in objects:
            o = copy.deepcopy(o)
            o["metadata"]["resourceVersion"] = str(next(self._rv))
            o["metadata"].setdefault("uid", f"uid-{o['metadata']['name']}")
            self.objects[self._key(o)] = o
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[dict[str, Any]] = []
        self._failures: dict[tuple[str, str], list[int]] = {}
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}

    @staticmethod
    def _key(o: Mapping[str, Any]) -> Key:
        return (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])

    def fail(self, verb: str, name: str, status: int, times: int = 1) -> None:
        self._failures.setdefault((verb, name), []).extend([status] * times)

    def _maybe_fail(self, verb: str, name: str) -> None:
        queue = self._failures.get((verb, name))
        if queue:
            raise ApiError(queue.pop(0), f"{verb} {name} refused by the test")

    def _queue(self, plural: str) -> asyncio.Queue[dict[str, Any]]:
        return self._queues.setdefault(plural, asyncio.Queue())

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        plural = next(p for p, k in self.kind_of.items() if k == obj["kind"])
        self._queue(plural).put_nowait({"type": type_, "object": copy.deepcopy(obj)})

    async def settle(self) -> None:
        """Until the informers have taken in every event sent so far."""
        for q in list(self._queues.values()):
            await q.join()

    def writes(self, verb: str | None = None) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if verb is None or c[0] == verb]

    # -- someone else's writes (a user, an agent) --
    def change(self, kind: str, namespace: str, name: str, spec: Mapping[str, Any], *,
               generation: bool = False) -> None:
        """Change an object's spec; with `generation`, as the API server does for a spec change
        (without, the engine sees it as it sees a report: a new version of the same generation)."""
        o = self.objects[(kind, namespace, name)]
        meta = {**o["metadata"], "resourceVersion": str(next(self._rv))}
        if generation:
            meta["generation"] = meta.get("generation", 1) + 1
        o = {**o, "spec": {**o.get("spec", {}), **spec}, "metadata": meta}
        self.objects[(kind, namespace, name)] = o
        self._emit("MODIFIED", o)

    # -- what KubeClient offers --
    async def list(self, resource: ApiResource, namespace: str | None = None, *, page_size: int = 500,
                   field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        kind = self.kind_of[resource.plural]
        items = [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                 if k == kind and namespace in (None, ns)]
        return items, str(next(self._rv))

    async def watch(self, resource: ApiResource, namespace: str | None, resource_version: str, *,
                    timeout_seconds: int = 300, field_selector: str | None = None,
                    is_known: Callable[[bytes], bool] | None = None) -> AsyncIterator[dict[str, Any]]:
        q = self._queue(resource.plural)
        while True:
            event = await q.get()
            try:
                rv = event["object"]["metadata"]["resourceVersion"]
                if is_known is not None and is_known(rv.encode()):
                    # What KubeClient.watch does with a known version: a bookmark, undecoded.
                    yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv}}}
                else:
                    yield event
            finally:
                q.task_done()  # the informer asks for the next event once it handled this one

    async def patch_status(self, resource: ApiResource, namespace: str | None, name: str,
                           patch: Mapping[str, Any], *, resource_version: str | None = None) -> Any:
        self.calls.append(("patch_status", name, dict(patch)))
        self._maybe_fail("patch_status", name)
        key = (resource.kind, namespace or "", name)
        if key not in self.objects:
            raise ApiError(404, "not found")
        o = self.objects[key]
        o = {**o, "status": apply_merge_patch(o.get("status"), patch),
             "metadata": {**o["metadata"], "resourceVersion": str(next(self._rv))}}
        self.objects[key] = o
        self._emit("MODIFIED", o)
        return copy.deepcopy(o)

    async def apply(self, resource: ApiResource, namespace: str | None, name: str, body: Mapping[str, Any],
                    *, field_manager: str, force: bool) -> Any:
        self.calls.append(("apply", name, field_manager, copy.deepcopy(dict(body))))
        self._maybe_fail("apply", name)
        key = (resource.kind, namespace or "", name)
        held = self.objects.get(key)
        o = copy.deepcopy(dict(body))
        o["metadata"] = {**(held or {}).get("metadata", {"uid": f"uid-{name}"}), **o["metadata"],
                         "resourceVersion": str(next(self._rv))}
        if held is not None and "status" in held and "status" not in o:
            o["status"] = held["status"]  # an apply of the spec leaves the status subresource alone
        # the generation grows with every change of the spec, as the API server counts it
        generation = int((held or {}).get("metadata", {}).get("generation") or 0)
        if held is None or held.get("spec") != o.get("spec"):
            generation += 1
        o["metadata"]["generation"] = generation
        self.objects[key] = o
        self._emit("MODIFIED" if held else "ADDED", o)
        return copy.deepcopy(o)

    async def replace(self, resource: ApiResource, namespace: str | None, name: str,
                      body: Mapping[str, Any]) -> Any:
        self.calls.append(("replace", name, copy.deepcopy(dict(body))))
        self._maybe_fail("replace", name)
        key = (resource.kind, namespace or "", name)
        held = self.objects.get(key)
        if held is None:
            raise ApiError(404, "not found")
        if body["metadata"].get("resourceVersion") != held["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        o = copy.deepcopy(dict(body))
        generation = int(held["metadata"].get("generation") or 0)
        if held.get("spec") != o.get("spec"):
            generation += 1
        # what a PUT cannot change (the server's own fields) comes from the held object
        o["metadata"] = {**o["metadata"], "uid": held["metadata"]["uid"], "generation": generation,
                         "resourceVersion": str(next(self._rv))}
        o.pop("status", None)
        if "status" in held:
            o["status"] = held["status"]  # the status subresource's: a PUT of the object leaves it
        self.objects[key] = o
        self._emit("MODIFIED", o)
        return copy.deepcopy(o)

    async def create(self, resource: ApiResource, namespace: str | None, body: Mapping[str, Any]) -> Any:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        self._maybe_fail("create", name)
        key = (resource.kind, namespace or "", name)
        if key in self.objects:
            raise ApiError(409, "already exists")
        o = copy.deepcopy(dict(body))
        o["metadata"] = {**o["metadata"], "uid": f"uid-{name}", "resourceVersion": str(next(self._rv))}
        self.objects[key] = o
        self._emit("ADDED", o)
        return copy.deepcopy(o)

    async def delete(self, resource: ApiResource, namespace: str | None, name: str, *,
                     uid: str | None = None, propagation: str | None = None) -> Any:
        self.calls.append(("delete", name, uid))
        self._maybe_fail("delete", name)
        key = (resource.kind, namespace or "", name)
        if key not in self.objects:
            raise ApiError(404, "not found")
        o = self.objects.pop(key)
        o = {**o, "metadata": {**o["metadata"], "resourceVersion": str(next(self._rv))}}
        self._emit("DELETED", o)
        return {"kind": "Status", "status": "Success"}

    async def create_event(self, **kw: Any) -> Any:
        self.events.append(kw)
        return {}


async def started(api: FakeApi, clocks: Clocks, controllers: list[Controller[Any, Any]],
                  settings: EngineSettings = SETTINGS, active: bool = True) -> Engine:
    engine = Engine(api, settings, clocks.wall, controllers=controllers,  # type: ignore[arg-type]
                    monotonic=clocks.monotonic)
    if active:
        engine.active.set()
    await asyncio.wait_for(engine.sync(), 10)  # a guard against a hang, not a measured time
    return engine


def plurals(*resources: ApiResource) -> dict[str, str]:
    return {r.plural: r.kind for r in resources}
