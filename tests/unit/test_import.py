"""``pylvs import``: piranha lvs.cf and keepalived.conf -> pylvs.toml.

Real inputs: the sample configurations Debian's keepalived package ships (every one with LVS
content imports and passes ``pylvs check``) and lvs.cf files written after Red Hat's examples
(tests/data/import/).  Each mapping asserted here is one row of docs/import.md.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from pylvs import config as config_mod
from pylvs.cli import main as cli_main
from pylvs.importers import ImportOptions, ImportResult, ImportSyntaxError, import_file
from pylvs.importers.tokens import SourceLine, parse_blocks, split_words
from pylvs.model import Config, Endpoint

DATA = Path(__file__).resolve().parent.parent / "data" / "import"
SAMPLES = Path("/usr/share/doc/keepalived/samples")
SAMPLE_FILES = sorted(SAMPLES.glob("keepalived.conf.*")) if SAMPLES.is_dir() else []
needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason="apt-get install keepalived")


def _roundtrip(result: ImportResult) -> Config:
    """The rendered TOML parses back to the same configuration (what `pylvs check` runs)."""
    back = config_mod.parse(result.render(), result.config.source)
    assert back == result.config
    return back


def _texts(result: ImportResult, dropped: bool) -> list[str]:
    return [n.text for n in result.notes if n.dropped == dropped]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the shared tokenizer ------------------------------------------------------------------------


def test_words_quotes_comments_and_braces() -> None:
    line = SourceLine("f", 1, 'a "b c"d{e} \'x\\ty\' ! tail # more')
    words = [w.text for w in split_words(line, "#!", escapes=True)]
    assert words == ["a", "b cd", "{", "e", "}", "x\ty"]
    raw = SourceLine("f", 2, 'send = "GET / HTTP/1.0\\r\\n\\r\\n" # c')
    assert [w.text for w in split_words(raw, "#", escapes=False)] == [
        "send", "=", "GET / HTTP/1.0\\r\\n\\r\\n"]


def test_blocks_on_one_line_and_nested() -> None:
    lines = [SourceLine("f", 1, "a 1 { b { c 2 } d }"), SourceLine("f", 2, "e")]
    tree = parse_blocks(lines, "#!", escapes=True)
    assert [n.keyword for n in tree] == ["a", "e"]
    assert tree[0].args == ["1"] and [n.keyword for n in tree[0].children or []] == ["b", "d"]
    b = tree[0].children[0] if tree[0].children else None
    assert b is not None and b.children is not None and b.children[0].args == ["2"]


@pytest.mark.parametrize(("text", "where", "what"), [
    ("a {\n b 1\n", "f:2", "a '}' is missing"),
    ("a 1\n}\n", "f:2", "without a block"),
    ('a "open\n', "f:1", "unterminated"),
])
def test_syntax_errors_name_file_and_line(text: str, where: str, what: str) -> None:
    lines = [SourceLine("f", i, t) for i, t in enumerate(text.splitlines(), 1)]
    with pytest.raises(ImportSyntaxError) as exc:
        parse_blocks(lines, "#!", escapes=True)
    assert str(exc.value).startswith(f"{where}:") and what in str(exc.value)


# -- keepalived's shipped samples ---------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_shipped_sample_imports_and_passes_check(path: Path) -> None:
    result = import_file(path, "keepalived")
    cfg = _roundtrip(result)
    text = path.read_text()
    if "virtual_server" in text:
        assert cfg.virtual_servers, path.name
    for note in result.notes:
        assert note.where.startswith(str(path)), note  # every note names its source line


@needs_samples
def test_sample_maps_scheduler_persistence_sorry_server_and_http_get() -> None:
    r = import_file(SAMPLES / "keepalived.conf.sample")
    (vs,) = r.config.virtual_servers
    assert vs.address == Endpoint(IPv4Address("10.10.10.2"), 1358)
    assert (vs.scheduler, vs.persistence, vs.protocol) == ("rr", 50, "tcp")
    assert vs.sorry_server == Endpoint(IPv4Address("192.168.200.200"), 1358)
    ck = vs.check
    assert (ck.type, ck.path, ck.digest) == ("http", "/testurl3/test.jsp",
                                             "640205b7b0fc66c1ea91c463fac6334d")
    # delay_loop 6, connect_timeout 3, retry 3: down after 4 failures, up after one success
    assert (ck.interval, ck.timeout, ck.fall, ck.rise) == (6.0, 3.0, 4, 1)
    assert ck.status == tuple(range(200, 300))  # keepalived's default status_code
    assert vs.down_action == "remove"
    assert r.config.ha.preempt is False  # nopreempt
    assert any("multicast VRRP" in t for t in _texts(r, dropped=True))


@needs_samples
def test_group_expands_ranges_and_fwmarks() -> None:
    r = import_file(SAMPLES / "keepalived.conf.virtual_server_group")
    services = _roundtrip(r).virtual_servers
    got = [str(vs.key) for vs in services]
    assert got[:3] == ["TCP 10.0.0.1:8080", "TCP 10.0.0.2:80", "TCP 192.168.200.1:1358"]
    assert got[3:11] == [f"TCP 192.168.200.{i}:80" for i in range(3, 11)]
    assert got[11:] == ["FWM 1", "FWM 2"]  # the group's fwmark entries
    assert all(len(vs.real_servers) == 2 for vs in services)
    assert services[11].real_servers[0].address == Endpoint(IPv4Address("192.168.200.1"), 1358)
    assert not any("firewall-mark" in t for t in _texts(r, dropped=True))
    assert sum("firewall-mark service" in t for t in _texts(r, dropped=False)) == 2


@needs_samples
def test_inhibit_misc_dynamic_quorum_status_codes_virtualhost() -> None:
    assert import_file(SAMPLES / "keepalived.conf.inhibit").config.virtual_servers[0] \
        .down_action == "quiesce"
    misc = import_file(SAMPLES / "keepalived.conf.misc_check_arg").config.virtual_servers[0]
    assert (misc.check.type, misc.check.command) == ("exec", "/usr/local/bin/script.sh arg1 arg2")
    q = import_file(SAMPLES / "keepalived.conf.quorum")
    vs = q.config.virtual_servers[0]
    assert (vs.quorum, vs.quorum_hysteresis, vs.check.port, vs.check.initial_state) == \
        (7, 2, 80, "down")  # alpha: servers start down
    assert any("quorum_up" in t for t in _texts(q, dropped=True))
    sc = import_file(SAMPLES / "keepalived.conf.status_code").config.virtual_servers[0].check
    assert (sc.type, sc.verify_tls) == ("https", False)
    assert sc.status == (*range(200, 300), *range(400, 500), 503, 505)
    vh = import_file(SAMPLES / "keepalived.conf.virtualhost").config.virtual_servers[0].check
    assert vh.host == "www.firewall.loc"


@needs_samples
def test_smtp_ping_udp_checks_map_as_far_as_they_go() -> None:
    smtp = import_file(SAMPLES / "keepalived.conf.SMTP_CHECK")
    assert smtp.config.virtual_servers[0].check.expect == "220"
    assert any("HELO" in t for t in _texts(smtp, dropped=True))
    ping = import_file(SAMPLES / "keepalived.conf.PING_CHECK").config.virtual_servers[0].check
    assert ping.type == "exec" and ping.command is not None and "ping" in ping.command
    assert import_file(SAMPLES / "keepalived.conf.UDP_CHECK").config.virtual_servers[0] \
        .check.type == "udp"


@needs_samples
def test_lvs_sync_daemon_and_nat_router_from_vrrp() -> None:
    r = import_file(SAMPLES / "keepalived.conf.vrrp.lvs_syncd")
    d = r.config.director
    assert (d.public_interface, d.private_interface, d.nat_router) == (
        "eth0", "eth1", "192.168.201.19/24")
    assert r.config.ha.sync is True and r.config.ha.priority == 100


# -- keepalived features beyond the samples ----------------------------------------------------


def test_vrrp_with_unicast_peers_becomes_ha(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    _write(tmp_path / "conf.d", "vs.conf", """
        virtual_server 198.18.0.100 80 {   # an included file
            lvs_sched wlc
            lvs_method NAT
            persistence_timeout
            persistence_granularity 255.255.255.0
            real_server 198.19.0.11 8080 {
                weight 5
                inhibit_on_failure
                uthreshold 100
                MISC_CHECK {
                    misc_path "/bin/chk ${PORT}"
                    misc_dynamic
                }
            }
        }
    """)
    main = _write(tmp_path, "keepalived.conf", """
        $PORT=8080
        global_defs {
            lvs_sync_daemon eth1 VI_1 id 7 port 8848
        }
        vrrp_instance VI_1 {
            state MASTER
            interface eth0
            @lb1 priority 200
            @lb2 priority 100
            advert_int 0.5
            preempt_delay 30
            unicast_peer {
                198.18.0.3
            }
            virtual_ipaddress {
                198.18.0.100/24 dev eth0
                198.19.0.1/24 dev eth1
            }
            notify_master "/etc/ka/master.sh"
            notify_backup /etc/ka/backup.sh
        }
        include conf.d/*.conf
    """)
    r = import_file(main, "keepalived", ImportOptions(config_id="lb1"))
    cfg = _roundtrip(r)
    ha = cfg.ha
    assert (ha.enabled, ha.priority, ha.interval, ha.preempt_delay) == (True, 200, 0.5, 30.0)
    assert (ha.peer_public, ha.sync, ha.sync_port) == (IPv4Address("198.18.0.3"), True, 8848)
    assert ha.notify is not None and "active) /etc/ka/master.sh" in ha.notify
    assert "backup) /etc/ka/backup.sh" in ha.notify
    assert cfg.director.nat_router == "198.19.0.1/24"
    (vs,) = cfg.virtual_servers
    assert (vs.persistence, str(vs.netmask), vs.down_action) == (360, "255.255.255.0", "quiesce")
    (rs,) = vs.real_servers
    assert (str(rs.address), rs.weight, rs.upper_threshold) == ("198.19.0.11:8080", 5, 100)
    assert (vs.check.command, vs.check.dynamic_weight) == ("/bin/chk 8080", True)
    notes = [n for n in r.notes if "conf.d" in n.where]
    assert not [n for n in notes if n.dropped]
    r2 = import_file(main, "keepalived", ImportOptions(config_id="lb2"))
    assert r2.config.ha.priority == 100


def test_notify_dispatcher_runs_the_role_command(tmp_path: Path) -> None:
    log = tmp_path / "log"
    main = _write(tmp_path, "keepalived.conf", f"""
        vrrp_instance VI_1 {{
            notify_master "sh -c 'echo master >> {log}'"
            notify_fault "sh -c 'echo fault >> {log}'"
            unicast_peer {{ 198.18.0.3 }}
            virtual_ipaddress {{ 198.19.0.1/24 }}
        }}
        virtual_server 198.18.0.100 80 {{ real_server 198.19.0.11 80 {{ }} }}
    """)
    notify = import_file(main, "keepalived").config.ha.notify
    assert notify is not None

    for role in ("active", "backup", "fault"):
        subprocess.run([*shlex.split(notify), role, "init"], check=True, timeout=10)
    assert log.read_text().split() == ["master", "fault"]


def test_differing_checks_drop_with_a_note(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server 198.18.0.100 80 {
            lb_kind DR
            real_server 198.19.0.11 80 { TCP_CHECK { connect_port 81 } }
            real_server 198.19.0.12 80 { HTTP_GET { url { path /x } } }
        }
    """)
    r = import_file(main, "keepalived")
    assert r.config.virtual_servers[0].check.type == "tcp"
    dropped = _texts(r, dropped=True)
    assert any("differs from the first" in t for t in dropped)
    assert any("NAT only" in t for t in dropped)


def test_fwmark_ftp_and_ipv6_services(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server fwmark 80 {
            persistence_timeout 300
            real_server 198.19.0.11 80 { TCP_CHECK { } }
        }
        virtual_server fwmark 6 {
            ip_family inet6
            real_server 2001:2::11 80 { }
        }
        virtual_server_group V6 {
            2001:2::100 80
            fwmark 7
        }
        virtual_server group V6 {
            ip_family inet6
            real_server 2001:2::11 80 { }
        }
        virtual_server 2001:2::100 443 { real_server 2001:2::11 443 { } }
        virtual_server 198.18.0.100 21 {
            persistence_timeout 60
            real_server 198.19.0.11 21 { TCP_CHECK { } }
        }
        virtual_server 198.18.0.100 2121 { protocol UDP real_server 198.19.0.11 21 { } }
    """)
    r = import_file(main, "keepalived")
    fwm, fwm6, v6group, fwm7, v6, ftp, udp = _roundtrip(r).virtual_servers
    assert [str(v.key) for v in (v6group, v6)] == ["TCP [2001:2::100]:80", "TCP [2001:2::100]:443"]
    # ip_family inet6: the marks' IPv6 services (ipvsadm -f 6 -6), IPv6 servers kept
    assert [str(v.key) for v in (fwm6, fwm7)] == ["FWM 6 IPv6", "FWM 7 IPv6"]
    assert str(fwm6.real_servers[0].address) == "[2001:2::11]:80"
    assert (str(fwm.key), fwm.persistence, str(fwm.real_servers[0].address)) == (
        "FWM 80", 300, "198.19.0.11:80")
    assert fwm.check.type == "tcp" and not fwm.ftp
    assert (str(ftp.key), ftp.ftp, udp.ftp) == ("TCP 198.18.0.100:21", True, False)
    assert any("ftp = true" in t for t in _texts(r, dropped=False))
    assert _texts(r, dropped=True) == []


def test_ipv6_services_groups_servers_and_vrrp(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server_group WEB6 {
            2001:2::100-101 80
            2001:2::200/127 80
        }
        virtual_server group WEB6 {
            persistence_timeout 300
            persistence_granularity 64
            sorry_server 2001:2:1::99 8080
            real_server 2001:2:1::11 80 { TCP_CHECK { connect_ip 2001:2:1::11 } }
            real_server 198.19.0.12 80 { TCP_CHECK { } }
        }
        virtual_server 2001:2::100 21 {
            sorry_server 198.19.0.99
            real_server 2001:2:1::11 21 { }
        }
        virtual_server 198.18.0.100 80 {
            persistence_timeout 60
            persistence_granularity 255.255.255.0
            real_server 198.19.0.11 80 { }
        }
        virtual_server fwmark 9 { real_server 2001:2:1::11 80 { } }
        vrrp_instance VI_1 {
            interface eth0
            priority 150
            unicast_peer {
                2001:2::3
                2001:2:1::3
            }
            virtual_ipaddress {
                198.18.0.100/24
                2001:2::100/64
                2001:2::101/64
                198.19.0.1/24 dev eth1
            }
            virtual_ipaddress_excluded {
                2001:2:1::1 dev eth1
            }
        }
    """)
    r = import_file(main, "keepalived")
    cfg = _roundtrip(r)
    a, b, c, d, ftp6, v4, fwm = cfg.virtual_servers
    assert [str(v.address) for v in (a, b, c, d)] == [
        "[2001:2::100]:80", "[2001:2::101]:80", "[2001:2::200]:80", "[2001:2::201]:80"]
    assert (a.persistence, a.netmask, str(a.sorry_server)) == (300, 64, "[2001:2:1::99]:8080")
    assert [str(rs.address) for rs in a.real_servers] == ["[2001:2:1::11]:80"]
    assert str(v4.netmask) == "255.255.255.0"  # IPv4: a netmask, IPv6: a prefix length
    assert (ftp6.ftp, ftp6.sorry_server) == (False, None)  # pylvs's FTP helper is IPv4
    assert fwm.real_servers == ()
    assert (cfg.director.nat_router, cfg.director.nat_router6) == (
        "198.19.0.1/24", "2001:2:1::1/64")
    assert (cfg.director.public_interface, cfg.director.private_interface) == ("eth0", "eth1")
    ha = cfg.ha
    assert (ha.enabled, ha.peer_public, ha.peer_private) == (
        True, IPv6Address("2001:2::3"), IPv6Address("2001:2:1::3"))
    dropped = _texts(r, dropped=True)
    assert sum("no NAT64" in t for t in dropped) == 3  # 198.19.0.12, 198.19.0.99, fwmark's
    assert len(dropped) == 3, dropped
    assert any("assumed to be a /64" in t for t in _texts(r, dropped=False))


def test_ipv6_granularity_is_a_prefix_length(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server 2001:2::100 80 {
            persistence_timeout 60
            persistence_granularity 255.255.255.0
        }
    """)
    with pytest.raises(ImportSyntaxError, match="persistence_granularity: expected an integer"):
        import_file(main, "keepalived")


def test_lvs_cf_port_21_becomes_ftp(tmp_path: Path) -> None:
    cf = _write(tmp_path, "lvs.cf", """
virtual ftp {
     address = 198.18.0.100 eth0:1
     port = 21
     server s1 {
         address = 198.19.0.11
     }
}
""")
    r = import_file(cf)
    (vs,) = _roundtrip(r).virtual_servers
    assert (vs.ftp, vs.fwmark, str(vs.address)) == (True, 0, "198.18.0.100:21")
    assert not r.dropped and any("ftp = true" in t for t in _texts(r, dropped=False))


# -- piranha lvs.cf ----------------------------------------------------------------------------


def test_redhat_lvs_cf() -> None:
    r = import_file(DATA / "lvs.cf.redhat")
    cfg = _roundtrip(r)
    d = cfg.director
    assert (d.public_interface, d.private_interface, d.nat_router) == (
        "eth0", "eth1", "10.11.12.10/24")
    assert (cfg.timeouts.tcp, cfg.timeouts.tcpfin, cfg.timeouts.udp) == (600, 60, 120)
    ha = cfg.ha
    assert (ha.enabled, ha.port, ha.interval, ha.dead_time, ha.preempt, ha.sync) == (
        True, 539, 6.0, 18.0, False, True)
    assert (ha.peer_public, ha.peer_private) == (IPv4Address("192.168.26.8"),
                                                 IPv4Address("10.11.12.8"))
    http, https, ftp = cfg.virtual_servers  # "OLD" is inactive
    assert (http.scheduler, http.persistence, str(http.netmask)) == ("wlc", 300, "255.255.255.0")
    assert http.down_action == "remove"  # quiesce_server = 0
    assert (http.check.type, http.check.send, http.check.expect) == (
        "send_expect", "GET / HTTP/1.0\\r\\n\\r\\n", "HTTP")
    # nanny: timeout 6 is interval and timeout, one failure is down, 15 // 6 = 2 to come back
    assert (http.check.interval, http.check.timeout, http.check.fall, http.check.rise) == (
        6.0, 6.0, 1, 2)
    assert [str(rs.address) for rs in http.real_servers] == ["10.11.12.1:80", "10.11.12.2:80"]
    assert [rs.weight for rs in http.real_servers] == [1, 2]
    assert https.down_action == "quiesce" and https.check.type == "exec"
    assert https.load_monitor.type == "loadavg" and https.load_monitor.command == "rup %h"
    assert ftp.load_monitor.command == "rsh %h uptime"
    # Red Hat's FTP recipe: one mark for port 21 and the passive ports, nanny probing port 21
    assert (str(ftp.key), str(ftp.address), ftp.persistence, ftp.ftp) == (
        "FWM 21", "192.168.26.11:0", 10, False)
    assert [str(rs.address) for rs in ftp.real_servers] == ["10.11.12.4:0"]
    assert (ftp.check.type, ftp.check.port) == ("send_expect", 21)
    assert not r.dropped
    assert any("firewall-mark service" in t for t in _texts(r, dropped=False))
    backup = import_file(DATA / "lvs.cf.redhat", options=ImportOptions(node="backup"))
    assert backup.config.ha.peer_public == IPv4Address("192.168.26.9")
    assert backup.config.ha.priority < ha.priority


def test_send_program_wrapper_compares_output(tmp_path: Path) -> None:
    prog = _write(tmp_path, "prog.sh", "#!/bin/sh\necho \"up $1\"\n")
    prog.chmod(0o755)
    cf = _write(tmp_path, "lvs.cf", f"""
virtual v {{
     address = 198.18.0.100 eth0:1
     send_program = "{prog} %h"
     expect = "up 198.19.0.11"
     server a {{
         address = 198.19.0.11
     }}
}}
""")
    cmd = import_file(cf).config.virtual_servers[0].check.command
    assert cmd is not None

    words = [w.replace("%h", "198.19.0.11") for w in shlex.split(cmd)]
    assert subprocess.run(words, timeout=10).returncode == 0
    words = [w.replace("%h", "198.19.0.12") for w in shlex.split(cmd)]
    assert subprocess.run(words, timeout=10).returncode != 0


def test_lvs_cf_errors(tmp_path: Path) -> None:
    bad = _write(tmp_path, "lvs.cf", "virtual v {\n  address = 1.2.3.4\n  weight = x\n")
    with pytest.raises(ImportSyntaxError, match=r"lvs.cf:3: end of file inside the block"):
        import_file(bad)
    bad.write_text("virtual v {\n  address = 1.2.3.999\n}\n")
    with pytest.raises(ImportSyntaxError, match=r"lvs.cf:2: address: expected an IPv4"):
        import_file(bad)
    bad.write_text("network = direct\nfrobnicate = 1\nvirtual v {\n address = 1.2.3.4\n"
                   " server s {\n  address = 10.0.0.1\n  weight = -1\n }\n}\n")
    with pytest.raises(ImportSyntaxError, match=r"lvs.cf:7: weight: expected 0..65535"):
        import_file(bad)


# -- the command -------------------------------------------------------------------------------


def test_cli_exit_status_output_file_and_errors(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.toml"
    assert cli_main(["import", str(DATA / "lvs.cf.testbed"), "-o", str(out)]) == 0
    assert cli_main(["check", "-c", str(out)]) == 0
    dropping = _write(tmp_path, "lvs.cf", "network = direct\nvirtual v {\n"
                      " address = 198.18.0.100\n server s {\n  address = 198.19.0.11\n }\n}\n")
    assert cli_main(["import", str(dropping)]) == 1
    captured = capsys.readouterr()
    assert "# DROPPED " in captured.out and "network = direct" in captured.out
    assert "dropped:" in captured.err
    bad = _write(tmp_path, "keepalived.conf", "virtual_server 1.2.3.4 80 {\n  lb_algo rr\n")
    assert cli_main(["import", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    unknown = _write(tmp_path, "site.conf", "hello world\n")
    assert cli_main(["import", str(unknown)]) == 2
    assert "--format" in capsys.readouterr().err


def test_cli_as_a_process() -> None:
    res = subprocess.run([sys.executable, "-m", "pylvs", "import", str(DATA / "lvs.cf.testbed")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert config_mod.parse(res.stdout).virtual_servers[0].scheduler == "wrr"


def test_generic_notify_gets_keepalived_arguments(tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = _write(tmp_path, "n.sh", f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    main = _write(tmp_path, "keepalived.conf", f"""
        vrrp_instance VI_9 {{
            notify {script}
            priority 120
            unicast_peer {{ 198.19.0.3 }}
            virtual_ipaddress {{ 198.19.0.1/24 dev eth1 }}
        }}
        virtual_server 198.18.0.100 80 {{ real_server 198.19.0.11 80 {{ }} }}
    """)
    ha = import_file(main, "keepalived").config.ha
    assert ha.notify is not None and ha.peer_private == IPv4Address("198.19.0.3")
    subprocess.run([*shlex.split(ha.notify), "active", "backup"], check=True, timeout=10)
    assert log.read_text().strip() == "INSTANCE VI_9 MASTER 120"


def test_lvs_cf_empty_value_and_missing_equals(tmp_path: Path) -> None:
    cf = _write(tmp_path, "lvs.cf", "debug_level =\nvirtual v {\n address = 198.18.0.100\n"
                " server s {\n  address = 198.19.0.11\n }\n}\n")
    assert import_file(cf).config.virtual_servers[0].real_servers[0].weight == 1
    cf.write_text("virtual v {\n address 198.18.0.100\n}\n")
    with pytest.raises(ImportSyntaxError, match=r"lvs.cf:2: expected 'key = value'"):
        import_file(cf)


def test_one_keepalived_file_for_both_nodes_via_config_id() -> None:
    name = DATA / "keepalived.conf.testbed-pair"
    one = import_file(name, options=ImportOptions(config_id="lb1")).config.ha
    two = import_file(name, options=ImportOptions(config_id="lb2")).config.ha
    assert (one.node_id, one.priority, one.peer_public) == ("lb1", 150, IPv4Address("198.18.0.3"))
    assert (two.node_id, two.priority, two.peer_public) == ("lb2", 100, IPv4Address("198.18.0.1"))
    assert one.enabled and two.enabled and not one.preempt


def test_lvs_cf_failover_needs_nat_router_and_a_longer_deadtime(tmp_path: Path) -> None:
    cf = _write(tmp_path, "lvs.cf", "primary = 198.18.0.1\nbackup = 198.18.0.3\n"
                "backup_active = 1\nkeepalive = 2\ndeadtime = 2\nnetwork = direct\n"
                "virtual v {\n address = 198.18.0.100\n}\n")
    r = import_file(cf)
    _roundtrip(r)
    assert r.config.ha.enabled is False and r.config.ha.dead_time is None
    dropped = _texts(r, dropped=True)
    assert any("nat_router" in t for t in dropped) and any("NAT only" in t for t in dropped)


def test_scheduler_flags_follow_the_scheduler(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server 198.18.0.100 80 {
            flag-1
            flag-2
            lvs_sched mh
            real_server 198.19.0.11 80 { weight 2 }
        }
    """)
    vs = import_file(main, "keepalived").config.virtual_servers[0]
    assert (vs.scheduler, vs.flags, vs.check.type) == ("mh", ("mh-fallback", "mh-port"), "none")


def test_ipv6_only_site_writes_its_gateway_in_nat_router(tmp_path: Path) -> None:
    main = _write(tmp_path, "keepalived.conf", """
        virtual_server_group G {
            2001:2::1:e-2001:2::1:10 443
        }
        virtual_server group G { real_server 2001:2:1::11 443 { } }
        vrrp_instance V {
            interface eth0
            unicast_peer {
                2001:2::3
            }
            virtual_ipaddress {
                2001:2::1:f/64
                2001:2:1::1 dev eth1
            }
        }
    """)
    r = import_file(main, "keepalived")
    cfg = _roundtrip(r)
    assert [str(v.address) for v in cfg.virtual_servers] == [
        "[2001:2::1:e]:443", "[2001:2::1:f]:443", "[2001:2::1:10]:443"]
    assert (cfg.director.nat_router, cfg.director.nat_router6) == ("2001:2:1::1/64", None)
    assert cfg.ha.enabled and not _texts(r, dropped=True)
