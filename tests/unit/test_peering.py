"""Peering without kopf's internals: our record (controller/peer_record.py) against kopf's peering
CRDs (tests/fixtures, as the chart installs them) and against kopf 1.45's own reading and writing
of it, so that kopf operators and `kopf freeze` still interoperate with ours. The test imports
kopf's peering module on purpose, as the reference: if kopf moves or changes it, this fails and
says the format must be checked again."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf._cogs.helpers.hostnames import get_descriptive_hostname
from kopf._core.engines.peering import Identity, Peer, detect_own_id

from stargate_operator.controller.peer_record import (
    PeerRecord,
    descriptive_hostname,
    own_identity,
    parse_status,
)
from stargate_operator.controller.peering import CLUSTER_KOPF_PEERINGS, KOPF_PEERINGS, should_act

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "kopf-peering-crds.yaml"
NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _peer(ident: str, prio: int, age: float = 0, lifetime: int = 15) -> PeerRecord:
    seen = (datetime.now(UTC) - timedelta(seconds=age)).isoformat()
    return PeerRecord.parse(ident, {"priority": prio, "lifetime": lifetime, "lastseen": seen})


def test_peering_highest_priority_then_identity_acts_and_dead_peers_do_not_count() -> None:
    assert should_act("b", 5, [_peer("a", 5), _peer("b", 5)])
    assert not should_act("a", 5, [_peer("a", 5), _peer("b", 5)])
    assert not should_act("z", 4, [_peer("a", 5)])
    assert should_act("z", 4, [_peer("a", 5, age=60)])  # its record expired: take over


# -- the CRD ------------------------------------------------------------------------------------

def _crds() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all(CRDS.read_text()) if d}


def _kept(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """What the API server would prune or reject in `value` under a structural schema (the parts
    these CRDs use: type, properties, x-kubernetes-preserve-unknown-fields)."""
    types = {"object": dict, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    want = schema.get("type")
    if want is not None and not isinstance(value, types[want]):
        return [f"{where or '.'}: {type(value).__name__}, not {want}"]
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props = schema.get("properties", {})
    problems = [f"{where}.{k}: pruned (not in the schema)" for k in value if k not in props]
    for k, v in value.items():
        if k in props:
            problems += _kept(v, props[k], f"{where}.{k}")
    return problems


def _peering_object(kind: str, namespaced: bool, status: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "stargate"}
    if namespaced:
        meta["namespace"] = "site-a"
    return {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta, "status": status}


@pytest.mark.parametrize("resource", [KOPF_PEERINGS, CLUSTER_KOPF_PEERINGS], ids=lambda r: r.kind)
def test_our_record_is_kept_whole_by_kopfs_peering_crd(resource: Any) -> None:
    crd = _crds()[resource.kind]
    # The resource we address is the one the CRD serves.
    assert crd["spec"]["group"] == resource.group and crd["spec"]["names"]["plural"] == resource.plural
    assert (crd["spec"]["scope"] == "Namespaced") == resource.namespaced
    version = next(v for v in crd["spec"]["versions"] if v["served"])
    assert version["name"] == resource.version
    schema = version["schema"]["openAPIV3Schema"]
    me = own_identity()
    record = PeerRecord(me, 100, 15, NOW).as_dict()
    body = _peering_object(resource.kind, resource.namespaced, {me: record, "gone@host/1/abc": None})
    body.pop("apiVersion"), body.pop("kind"), body.pop("metadata")  # served by the API machinery
    assert _kept(body, schema) == []
    # And the checker does catch what would be lost.
    assert _kept({"spec": {"x": 1}}, schema) == [".spec: pruned (not in the schema)"]
    assert _kept({"status": "x"}, schema) == [".status: str, not object"]


def test_the_record_is_kopfs_three_fields_in_rfc3339() -> None:
    record = PeerRecord("op@host/20260301120000/abc", 100, 15, NOW).as_dict()
    assert record == {"priority": 100, "lifetime": 15, "lastseen": "2026-03-01T12:00:00.250Z"}


# -- kopf reads ours, we read kopf's ------------------------------------------------------------

def test_kopf_reads_our_record_as_we_meant_it() -> None:
    fresh = PeerRecord("ours", 7, 15, datetime.now(UTC)).as_dict()
    peer = Peer(identity=Identity("ours"), **fresh)
    assert (peer.priority, peer.lifetime, peer.is_dead) == (7, timedelta(seconds=15), False)
    old = PeerRecord("ours", 7, 15, datetime.now(UTC) - timedelta(seconds=16)).as_dict()
    assert Peer(identity=Identity("ours"), **old).is_dead
    assert Peer(identity=Identity("ours"), **PeerRecord("ours", 7, 15, NOW).as_dict()).lastseen == NOW


def test_we_read_kopfs_record_as_kopf_does() -> None:
    theirs = Peer(identity=Identity("kopf@elsewhere/20260301/xyz"), priority=3, lifetime=60).as_dict()
    assert "+00:00" in theirs["lastseen"]  # kopf writes isoformat(), not our Z form
    (ours,) = parse_status({"kopf@elsewhere/20260301/xyz": theirs, "left@x": None})
    kopf = Peer(identity=Identity("kopf@elsewhere/20260301/xyz"), **theirs)
    assert (ours.identity, ours.priority, ours.lifetime) == ("kopf@elsewhere/20260301/xyz", 3, 60)
    assert ours.lastseen == kopf.lastseen and ours.deadline() == kopf.deadline
    assert not ours.is_dead and ours.dead_at(kopf.deadline)
    # kopf's defaults for a record without fields: priority 0, lifetime 60, seen now.
    (bare,) = parse_status({"x": {}}, now=NOW)
    assert (bare.priority, bare.lifetime, bare.lastseen) == (0, 60, NOW)


def test_identity_is_detected_as_kopf_detects_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_ID", raising=False)
    assert descriptive_hostname() == get_descriptive_hostname()
    ours, kopfs = own_identity(), str(detect_own_id(manual=False))
    shape = re.compile(r"^(?P<who>[^@/]+@[^/]+)/\d{14}/[a-z0-9]{3}$")
    m_ours, m_kopf = shape.match(ours), shape.match(kopfs)
    assert m_ours and m_kopf and m_ours["who"] == m_kopf["who"], (ours, kopfs)
    assert own_identity(manual=True) == str(detect_own_id(manual=True))
    monkeypatch.setenv("POD_ID", "stargate-operator-7d9f-abcde")
    assert own_identity() == str(detect_own_id(manual=False)) == "stargate-operator-7d9f-abcde"
