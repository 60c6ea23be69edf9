"""List-then-watch loops that keep the store true, one per kind (and namespace when restricted).

Why our own and not kopf's watcher: kopf spawns a worker per object and runs its handler
machinery per event, which measured here at about 100 to 250 objects a second on one core; a
site of 10,000 nodes would take a minute to be seen at all. These loops only parse the event
and hand the object to the engine, which coalesces by namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stargate_operator.kinds import API_VERSION
from stargate_operator.kube import ApiError, KubeClient, WatchExpired

logger = logging.getLogger("stargate.informer")

# The API server serves lists from its watch cache, and each page costs it a pass over the whole
# cache: measured at 100,000 GPUNodes, pages of 500 took 11.4 s of its CPU and 10.4 s, pages of
# 5,000 took 6.2 s and 8.0 s. A page of 5,000 of our objects is about 15 MB.
LIST_PAGE_SIZE = 5000

OnList = Callable[[str, str | None, list[dict[str, Any]]], None]
OnEvent = Callable[[str, dict[str, Any]], None]


async def run_informer(
    client: KubeClient,
    plural: str,
    kind: str,
    namespace: str | None,
    on_list: OnList,
    on_event: OnEvent,
    synced: asyncio.Event,
    *,
    watch_timeout: int = 300,
    max_backoff: float = 30.0,
    is_known: Callable[[bytes], bool] | None = None,
) -> None:
    """Runs until cancelled; survives API server restarts, expired resource versions, errors.

    `is_known`: see KubeClient.watch; events it recognises only move the resume point.
    """
    rv: str | None = None
    backoff = 0.5
    where = namespace or "all namespaces"
    while True:
        try:
            if rv is None:
                items, rv = await client.list(plural, namespace, page_size=LIST_PAGE_SIZE)
                on_list(kind, namespace, items)
                synced.set()
                logger.info("listed %d %s in %s", len(items), plural, where)
            async for event in client.watch(plural, namespace, rv, timeout_seconds=watch_timeout,
                                            is_known=is_known):
                obj = event["object"]
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if event["type"] == "BOOKMARK":
                    continue
                obj.setdefault("kind", kind)
                obj.setdefault("apiVersion", API_VERSION)
                on_event(event["type"], obj)
            backoff = 0.5
        except WatchExpired:
            logger.info("watch of %s in %s expired; listing again", plural, where)
            rv = None
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Expected failures (API server away, bad answer) get a line; anything else its
            # traceback. Either way the loop goes on: a dead watch would freeze the cache silently.
            if isinstance(e, ApiError | OSError | ValueError):
                logger.warning("watching %s in %s failed (%s); retrying in %.1fs", plural, where, e, backoff)
            else:
                logger.exception("watching %s in %s failed unexpectedly; retrying in %.1fs",
                                 plural, where, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
