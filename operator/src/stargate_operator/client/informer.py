"""One list-then-watch loop (an informer) for any resource: the operator's engine and the node agent
both run it.

It lists (in pages), hands the items over, then watches from the list's resourceVersion and hands
over every event; it lists again when the watch expires, and survives API server restarts and
errors with a capped backoff. With `poll_interval` it lists every so often instead of watching
(the agent's `--no-watch`).

Why our own and not kopf's watcher: kopf spawns a worker per object and runs its handler
machinery per event, which measured here at about 100 to 250 objects a second on one core; a
site of 10,000 nodes would take a minute to be seen at all. This loop only parses the event and
hands the object over; the engine coalesces by namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stargate_operator.client.asyncclient import KubeClient
from stargate_operator.client.errors import ApiError, WatchExpired
from stargate_operator.client.resource import ApiResource

logger = logging.getLogger("stargate.informer")

# The API server serves lists from its watch cache, and each page costs it a pass over the whole
# cache: measured at 100,000 GPUNodes, pages of 500 took 11.4 s of its CPU and 10.4 s, pages of
# 5,000 took 6.2 s and 8.0 s. A page of 5,000 of our objects is about 15 MB.
LIST_PAGE_SIZE = 5000

OnList = Callable[[str, str | None, list[dict[str, Any]]], None]  # kind, namespace (None: all), items
OnEvent = Callable[[str, dict[str, Any]], None]  # ADDED | MODIFIED | DELETED, object


async def run_informer(
    client: KubeClient,
    resource: ApiResource,
    namespace: str | None,
    on_list: OnList,
    on_event: OnEvent,
    synced: asyncio.Event | None = None,
    *,
    field_selector: str | None = None,
    watch_timeout: int = 300,
    poll_interval: float | None = None,
    min_backoff: float = 0.5,
    max_backoff: float = 30.0,
    page_size: int = LIST_PAGE_SIZE,
    is_known: Callable[[bytes], bool] | None = None,
) -> None:
    """Runs until cancelled; survives API server restarts, expired resource versions, errors.

    `namespace` None: every namespace (or a cluster-scoped resource). `synced` is set after the
    first list. `is_known`: see KubeClient.watch; events it recognises only move the resume point.
    Items (KubeClient.list fills them in) and event objects carry `kind` and `apiVersion`.
    """
    if not resource.namespaced:
        namespace = None
    rv: str | None = None
    backoff = min_backoff
    where = namespace or ("all namespaces" if resource.namespaced else "the cluster")
    listed_once = False
    while True:
        try:
            if rv is None:
                items, rv = await client.list(resource, namespace, page_size=page_size,
                                              field_selector=field_selector)
                on_list(resource.kind, namespace, items)
                if synced is not None:
                    synced.set()
                # A poller lists every interval: one line for the first, not one a minute after.
                logger.log(logging.DEBUG if listed_once else logging.INFO, "listed %d %s in %s",
                           len(items), resource.plural, where)
                listed_once = True
            if poll_interval is not None:
                backoff = min_backoff
                await asyncio.sleep(poll_interval)
                rv = None
                continue
            async for event in client.watch(resource, namespace, rv, timeout_seconds=watch_timeout,
                                            field_selector=field_selector, is_known=is_known):
                obj = event["object"]
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if event["type"] == "BOOKMARK":
                    continue
                obj.setdefault("kind", resource.kind)
                obj.setdefault("apiVersion", resource.api_version)
                on_event(event["type"], obj)
            backoff = min_backoff
        except WatchExpired:
            logger.info("watch of %s in %s expired; listing again", resource.plural, where)
            rv = None
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Expected failures (API server away, bad answer) get a line; anything else its
            # traceback. Either way the loop goes on: a dead watch would freeze the cache silently.
            doing = "list" if rv is None or poll_interval is not None else "watch"
            if isinstance(e, ApiError | OSError | ValueError):
                logger.warning("%s in %s: %s failed (%s); retrying in %.1fs", resource.plural, where,
                               doing, e, backoff)
            else:
                logger.exception("%s in %s: %s failed unexpectedly; retrying in %.1fs",
                                 resource.plural, where, doing, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
