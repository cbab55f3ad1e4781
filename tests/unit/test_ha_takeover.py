"""Takeover: ordering of claim/release, notify FIFO, HaNode built from a Config."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from pylvs.config import parse
from pylvs.ha.messages import PathId, Role
from pylvs.ha.node import HaNode, services_digest
from pylvs.ha.takeover import Takeover
from pylvs.netconf import NetConf

if TYPE_CHECKING:
    from pylvs.director import ComponentHost


class Owner:
    """Records claim/release calls (the netns tests use the real netconf)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def claim(self) -> None:
        if self.fail:
            raise OSError("netlink said no")
        self.calls.append("claim")

    def release(self) -> None:
        self.calls.append("release")


async def test_notify_runs_in_order_with_new_and_old_role(tmp_path: Path) -> None:
    out = tmp_path / "notify.log"
    script = tmp_path / "notify.py"
    script.write_text("import sys, time\ntime.sleep(0.05 if sys.argv[1] == 'backup' else 0)\n"
                      f"open({str(out)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    owner = Owner()
    tk = Takeover(owner, [], garp_repeat_delay=0, notify=f"{sys.executable} {script}")
    await tk.role_changed(Role.BACKUP, Role.INIT)
    await tk.role_changed(Role.ACTIVE, Role.BACKUP)
    await tk.reannounce()
    await tk.role_changed(Role.INIT, Role.ACTIVE)
    await tk.close()
    assert out.read_text().splitlines() == ["backup init", "active backup", "active active",
                                            "init active"]
    assert owner.calls == ["release", "claim", "release"]
    assert (tk.notify_runs, tk.notify_failures) == (4, 0)


async def test_failing_notify_is_counted_not_fatal(tmp_path: Path) -> None:
    tk = Takeover(Owner(), [], notify=f"{sys.executable} -c 'raise SystemExit(3)'")
    await tk.role_changed(Role.BACKUP, Role.INIT)
    await tk.close()
    assert (tk.notify_runs, tk.notify_failures) == (1, 1)
    tk2 = Takeover(Owner(), [], notify="/nonexistent/notify-command")
    await tk2.role_changed(Role.BACKUP, Role.INIT)
    await tk2.close()
    assert tk2.notify_failures == 1


async def test_claim_failure_propagates_so_the_transport_can_fault() -> None:
    tk = Takeover(Owner(fail=True), [])
    with pytest.raises(OSError):
        await tk.role_changed(Role.ACTIVE, Role.BACKUP)
    await tk.close()


async def test_reannounce_only_while_active() -> None:
    owner = Owner()
    tk = Takeover(owner, [], notify=None)
    await tk.reannounce()
    assert tk.garps_sent == 0 and owner.calls == []
    await tk.close()


CONFIG = """
[director]
public_interface = "eth0"
private_interface = "eth1"
nat_router = "198.19.0.1/24"

[ha]
enabled = true
node_id = "dir1"
priority = 150
peer_public = "198.18.0.3"
peer_private = "198.19.0.3"
secret_file = "{secret}"
interval = 0.1

[[virtual_server]]
address = "198.18.0.100:80"
scheduler = "rr"

  [[virtual_server.real_server]]
  address = "198.19.0.11:80"
"""


def test_node_is_built_from_config(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    cfg = parse(CONFIG.format(secret=secret))
    node = HaNode(cfg, netconf=NetConf("eth0", "eth1", "pylvs0"))
    assert node.role is Role.INIT and not node.active
    assert node.machine.paths == (PathId.PUBLIC, PathId.PRIVATE)
    assert node.machine.priority == 150 and node.machine.interval == 0.1
    assert node.owner.vips == (IPv4Address("198.18.0.100"),)
    assert [str(n) for n in node.owner.nat_routers] == ["198.19.0.1/24"]
    assert [t.interface for t in node.takeover.targets] == ["eth0", "eth1"]
    assert node.sync is None  # no engine given
    assert node.status()["role"] == "init"
    # the digest ignores what legitimately differs between the two directors
    other = parse(CONFIG.format(secret=secret).replace('"dir1"', '"dir2"')
                             .replace("150", "100").replace('"eth0"', '"ens1"'))
    assert services_digest(cfg) == services_digest(other)
    changed = parse(CONFIG.format(secret=secret).replace('"rr"', '"wlc"'))
    assert services_digest(cfg) != services_digest(changed)



def test_component_registers_with_the_director_and_follows_the_role(tmp_path: Path) -> None:
    import asyncio
    from dataclasses import dataclass, field
    from typing import Any

    from pylvs.ha.node import HaComponent
    from pylvs.model import Config

    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    cfg = parse(CONFIG.format(secret=secret))

    @dataclass
    class Surface:
        config: Config
        netconf: NetConf
        active: bool = False
        status_providers: dict[str, Any] = field(default_factory=dict)
        config_listeners: list[Any] = field(default_factory=list)

    d = Surface(cfg, NetConf("eth0", "eth1", "pylvs0"))
    comp = HaComponent(cast("ComponentHost", d), engine=None)
    assert d.status_providers["ha"]()["role"] == "init"
    for listener in comp.node.role_listeners:
        listener(Role.ACTIVE)
    assert d.active
    for listener in comp.node.role_listeners:
        listener(Role.BACKUP)
    assert not d.active
    new = parse(CONFIG.format(secret=secret).replace("198.18.0.100:80", "198.18.0.101:80"))
    asyncio.run(d.config_listeners[0](new))
    assert comp.node.owner.vips == (IPv4Address("198.18.0.101"),)
    assert comp.node.machine.digest == comp.node.transport.sender.digest == services_digest(new)
