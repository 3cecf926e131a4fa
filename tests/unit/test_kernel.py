"""``LinuxKernel`` says what failed in the project's terms: a netlink error while
reading the underlay's MTU or removing an earlier run's leftovers is a NetworkError that
names the object and the action. The kernel refuses these only in states a test cannot
make on demand (a link vanishing under a dump, a busy device), so pyroute2's failures
are injected at the net/ functions the kernel calls; the rest of the removal still runs."""

from __future__ import annotations

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from meshlet.agent.kernel import LinuxKernel
from meshlet.errors import MeshletError, NetworkError
from meshlet.net import bridge, netns, vxlan


def test_reading_the_underlay_mtu_translates_a_netlink_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(local: str) -> int:
        raise NetlinkError(19, "No such device")

    monkeypatch.setattr(vxlan, "mtu_for", refused)
    with pytest.raises(NetworkError, match=r"cannot read the MTU of the interface holding "
                                           r"192\.168\.1\.5 .*No such device"):
        LinuxKernel().underlay_mtu("192.168.1.5")


def test_leftovers_are_removed_as_far_as_they_can_be_and_the_rest_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []

    def remove_namespace(name: str) -> None:
        if name == "ml-abc-stuck":
            raise MeshletError("ip netns delete ml-abc-stuck: Device or resource busy")
        removed.append(name)

    def delete_link(name: str) -> None:
        if name == "mlbbusy":
            raise NetlinkError(16, "Device or resource busy")
        removed.append(name)

    monkeypatch.setattr(netns, "can_manage", lambda: True)
    monkeypatch.setattr(netns, "ours", lambda: ["ml-abc-stuck", "ml-abc-web", "ml-xyz-db"])
    monkeypatch.setattr(netns, "remove", remove_namespace)
    monkeypatch.setattr(bridge, "ours", lambda: ["mlbbusy", "mlbfront", "mlvpeer", "mlxwide"])
    monkeypatch.setattr(bridge, "delete_link", delete_link)
    with pytest.raises(NetworkError) as caught:
        LinuxKernel().remove_leftovers("ml-abc-")
    assert str(caught.value).startswith("cannot remove 2 leftover(s) of an earlier run: "
                                        "namespace 'ml-abc-stuck': ip netns delete")
    assert "link 'mlbbusy': (16, 'Device or resource busy')" in str(caught.value)
    # A veth left whose namespace is not this node's (a runtime's, through meshlet-cni)
    # goes too.
    assert removed == ["ml-abc-web", "mlbfront", "mlvpeer", "mlxwide"]


def test_listing_the_links_translates_a_netlink_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> list[str]:
        raise NetlinkError(105, "No buffer space available")

    monkeypatch.setattr(netns, "can_manage", lambda: True)
    monkeypatch.setattr(netns, "ours", lambda: [])
    monkeypatch.setattr(bridge, "ours", refused)
    with pytest.raises(NetworkError, match=r"cannot list this host's links: .*No buffer"):
        LinuxKernel().remove_leftovers("ml-abc-")
