"""Pure agent decisions: health thresholds, restart backoff, sidecar snapshots."""

from __future__ import annotations

from meshlet.agent.backoff import RestartBackoff
from meshlet.agent.health import HealthTracker
from meshlet.agent.sidecar_config import bootstrap_snapshot, build_snapshot
from meshlet.proxy.config import Snapshot


def test_health_thresholds() -> None:
    t = HealthTracker(healthy_threshold=2, unhealthy_threshold=3)
    assert t.status == "critical"
    assert t.record(True) is False
    assert t.record(True) is True and t.status == "passing"
    assert [t.record(False) for _ in range(2)] == [False, False]
    assert t.record(True) is False  # a success resets the failure count
    assert [t.record(False) for _ in range(3)] == [False, False, True]
    assert t.status == "critical"


def test_backoff_doubles_caps_and_forgives() -> None:
    b = RestartBackoff(base=0.5, cap=4.0, stable_after=10.0)
    assert [b.next_delay(0.1) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.next_delay(60.0) == 0.5  # ran long enough: start over


def test_snapshot_from_catalog() -> None:
    boot = bootstrap_snapshot("frontend", "frontend-0", "http", 5000,
                              [("catalog", "http"), ("auth", "tcp")])
    assert [(lc.name, lc.direction, lc.protocol) for lc in boot.listeners] == [
        ("frontend", "inbound", "http"), ("catalog", "outbound", "http"),
        ("auth", "outbound", "tcp")]
    instances = {"catalog": [
        {"id": "c-2", "address": "127.0.0.1", "port": 2, "weight": 1},
        {"id": "c-1", "address": "127.0.0.1", "port": 1, "weight": 1},
        {"id": "c-0", "address": "127.0.0.1", "port": 9, "weight": 0},  # drained
        {"id": "c-3", "address": "127.0.0.1", "port": 3, "status": "critical",
         "meta": {"shard": "a"}, "zone": "z1", "node": "n1"},
    ]}
    snap = build_snapshot(7, boot, instances, {"catalog": {"retries": 1},
                                                "frontend": {"request_timeout": 3.0}})
    catalog = snap.clusters["outbound:catalog"]
    assert [e.id for e in catalog.endpoints] == ["c-0", "c-1", "c-2", "c-3"]
    c3 = catalog.endpoints[3]
    assert (c3.healthy, c3.meta, c3.zone, c3.node) == (False, (("shard", "a"),), "z1", "n1")
    assert catalog.endpoints[0].weight == 0
    assert catalog.effective["retries"] == 1
    assert snap.clusters["outbound:auth"].endpoints == ()
    assert snap.clusters["inbound:frontend"].effective["request_timeout"] == 3.0
    assert snap.clusters["inbound:frontend"].endpoints[0].port == 5000
    # What /config shows parses back to the same snapshot.
    assert Snapshot.from_dict(snap.to_dict()) == snap


def test_each_sidecar_gets_the_intentions_that_name_its_service() -> None:
    boot = bootstrap_snapshot("db", "db-0", "http", 9000, [])
    body = {"default_policy": "deny", "intentions": [
        {"source": "web", "destination": "db", "action": "allow", "precedence": 4},
        {"source": "*", "destination": "*", "action": "deny", "precedence": 1},
        {"source": "web", "destination": "cache", "action": "allow", "precedence": 4}]}
    snap = build_snapshot(3, boot, {}, {}, body)
    assert snap.intentions is not None and snap.intentions.default_policy == "deny"
    assert [(i.source, i.destination) for i in snap.intentions.intentions] == [
        ("web", "db"), ("*", "*")]
    again = Snapshot.from_dict(snap.to_dict())
    assert again.intentions == snap.intentions  # what travels to the sidecar
    assert build_snapshot(4, boot, {}, {}).intentions is None  # none known: none
