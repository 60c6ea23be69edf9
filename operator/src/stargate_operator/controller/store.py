"""The engine's cache of every watched object, grouped by namespace.

Objects are plain dicts as the API server returns them. They are never mutated in place: an
update replaces the dict, so a reader (the metrics thread) that took a list of them sees each
object whole, before or after, never half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def resource_version(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class Store:
    def __init__(self) -> None:
        self._by_ns: dict[str, dict[Key, dict[str, Any]]] = {}

    def upsert(self, obj: dict[str, Any]) -> bool:
        """Store the object; False when we already hold this version or a newer one.

        The watch echo of the operator's own status write carries the resourceVersion that the
        write's response already stored: it changes nothing and must not cause a recomputation.
        """
        key = key_of(obj)
        bucket = self._by_ns.setdefault(key[1], {})
        held = bucket.get(key)
        if held is not None and resource_version(held) >= resource_version(obj) > 0:
            return False
        meta = obj.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            # Server-side apply bookkeeping: often the largest part of an object, never read here.
            obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        bucket[key] = obj
        return True

    def delete(self, key: Key) -> None:
        bucket = self._by_ns.get(key[1])
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del self._by_ns[key[1]]

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._by_ns.get(key[1], {}).get(key)

    def replace_kind(self, kind: str, namespace: str | None, objects: Iterable[dict[str, Any]]) -> set[str]:
        """Replace every object of `kind` (in `namespace`, or everywhere) after a re-list.

        Returns the namespaces whose content may have changed.
        """
        touched: set[str] = set()
        for ns, bucket in list(self._by_ns.items()):
            if namespace is not None and ns != namespace:
                continue
            for key in [k for k in bucket if k[0] == kind]:
                del bucket[key]
                touched.add(ns)
            if not bucket:
                del self._by_ns[ns]
        for obj in objects:
            self.upsert(obj)
            touched.add(key_of(obj)[1])
        return touched

    def namespaces(self) -> list[str]:
        return list(self._by_ns)

    def objects(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._by_ns.get(namespace, {}).values())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for bucket in list(self._by_ns.values()):
            yield from list(bucket.values())

    def count(self) -> int:
        return sum(len(b) for b in self._by_ns.values())
