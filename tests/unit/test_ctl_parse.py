"""``pylvs ctl`` option parsing: ipvsadm's commands, defaults, checks and messages."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pylvs.cli import ctl
from pylvs.model import Endpoint


def test_list_numeric_clustered() -> None:
    req = ctl.parse_args(["-Ln"])
    assert req.command == "list"
    assert req.options == {"numeric"}


def test_no_arguments_lists() -> None:
    assert ctl.parse_args([]).command == "list"


def test_add_service_defaults_like_ipvsadm() -> None:
    req = ctl.parse_args(["-A", "-t", "198.18.0.100:80"])
    assert (req.command, req.protocol, req.service) == (
        "add-service", "tcp", Endpoint(IPv4Address("198.18.0.100"), 80))
    assert req.scheduler == "wlc"
    assert req.persistence == 0


def test_persistent_takes_optional_value() -> None:
    assert ctl.parse_args(["-A", "-t", "198.18.0.100:80", "-p"]).persistence == 360
    assert ctl.parse_args(["-A", "-t", "198.18.0.100:80", "-p", "60"]).persistence == 60
    assert ctl.parse_args(["-A", "-t", "198.18.0.100:80", "-p60"]).persistence == 60
    assert ctl.parse_args(["-A", "-p", "-t", "198.18.0.100:80"]).persistence == 360
    assert ctl.parse_args(["--add-service", "--tcp-service=198.18.0.100:80",
                           "--persistent=90"]).persistence == 90


def test_real_server_port_defaults_to_service_port() -> None:
    req = ctl.parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-m", "-w", "3"])
    assert req.server == Endpoint(IPv4Address("198.19.0.11"), 80)
    assert req.weight == 3


def test_edit_server_resets_unset_fields_to_defaults() -> None:
    req = ctl.parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.19.0.11:80"])
    assert (req.weight, req.upper_threshold, req.lower_threshold) == (1, 0, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-g"], "-g (direct routing)"),
        (["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-i"], "-i (IPIP"),
        (["-A", "-f", "0"], "illegal fwmark specified"),
        (["-A", "-f", "1", "-t", "198.18.0.100:80"],
         "multiple 'service-address' options specified"),
        (["-A", "-t", "198.18.0.100:0"], "Zero port specified for non-persistent service"),
        (["-A", "-t", "198.18.0.100:80", "-w", "2"],
         "Illegal 'weight' option with the 'add-service' command"),
        (["-a", "-t", "198.18.0.100:80"],
         "You need to supply the 'real-server' option for the 'add-server' command"),
        (["-L", "-c", "--timeout"],
         "The option 'timeout' conflicts with the 'connection' option in the 'list' command"),
        (["-L", "-c", "--stats"], "options conflicts in the list command"),
        (["-A", "-L"], "multiple commands specified"),
        (["-A", "-t", "198.18.0.100:80", "-t", "198.18.0.100:81"],
         "multiple 'service-address' options specified"),
        (["--set", "900", "120"], "--set option requires 3 timeout values"),
        (["--set", "900", "x", "300"], "invalid timeout value `x' specified"),
        (["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-w", "65536"],
         "illegal weight specified"),
        (["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-w", "-1"],
         "illegal weight specified"),
        (["-A", "-t", "not an address!:80"], "illegal virtual server address[:port] specified"),
        (["-L", "--bogus"], "invalid option `--bogus'"),
        (["-L", "extra"], "unexpected argument extra"),
        (["-A", "-t", "198.18.0.100:80", "-s", "rr", "-b", "sh-port"],
         "incompatible scheduler flag `sh-port'"),
        (["-A", "-t", "198.18.0.100:80", "-b", "mh-fallback"],  # no -s: wlc
         "incompatible scheduler flag `mh-fallback'"),
        (["-A", "-t", "198.18.0.100:80", "-s", "sh", "-b", "sh-port,bogus"],
         "invalid scheduler flag `bogus'"),
        (["-L", "--timeout", "--persistent-conn"], "options conflicts in the list command"),
    ],
)
def test_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(ctl.CtlError) as info:
        ctl.parse_args(argv)
    assert message in str(info.value)
    assert info.value.status == 2


@pytest.mark.parametrize(("argv", "flags"), [
    (["-A", "-t", "198.18.0.100:80", "-s", "rr", "-b", "flag-1,flag-2,flag-3"],
     ["flag-1", "flag-2", "flag-3"]),
    (["-A", "-t", "198.18.0.100:80", "-b", "sh-port,sh-fallback", "-s", "sh"],  # -s after -b
     ["sh-port", "sh-fallback"]),
    (["-E", "-t", "198.18.0.100:80", "-s", "mh", "-b", "mh-port"], ["mh-port"]),
])
def test_sched_flags_accepted(argv: list[str], flags: list[str]) -> None:
    assert ctl.parse_args(argv).flags == flags


def test_connection_listing_takes_persistent_conn() -> None:
    req = ctl.parse_args(["-Lnc", "--persistent-conn"])
    assert req.options >= {"connection", "persistent-conn"}


def test_connection_refused_gets_the_serve_hint(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    path = f"{tmp_path}/dead.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)  # bound, never listening: what a killed daemon leaves behind
    sock.close()
    assert ctl.main(["-Ln", "--socket", path]) == 1
    assert "connection refused (is `pylvs serve` running?)" in capsys.readouterr().err
    assert ctl.status_main(["--socket", path]) == 1
    assert "is `pylvs serve` running?" in capsys.readouterr().err


def test_status_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.status_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Print a summary of a running director" in out
    assert "--url" in out


def test_main_reports_refusal_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    status = ctl.main(["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-g"])
    assert status == 2
    assert "NAT director" in capsys.readouterr().err


def test_set_timeouts() -> None:
    req = ctl.parse_args(["--set", "900", "0", "300"])
    assert req.command == "set"
    assert req.timeouts == (900, 0, 300)


def test_save_line_round_trips_to_operation() -> None:
    op = ctl.to_operation(ctl.parse_args(
        ["-A", "-t", "198.18.0.100:80", "-s", "sh", "-p", "360", "-M", "255.255.255.0",
         "-b", "sh-port"]))
    assert op == {"op": "add_service", "service": {
        "protocol": "tcp", "address": "198.18.0.100:80", "scheduler": "sh", "persistence": 360,
        "netmask": "255.255.255.0", "flags": ["sh-port"],
        "check": {"type": "none"}}}  # ipvsadm's kernel probes nothing
    op = ctl.to_operation(ctl.parse_args(
        ["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11:8080", "-m", "-w", "3"]))
    assert op == {"op": "add_server", "protocol": "tcp", "address": "198.18.0.100:80",
                  "server": {"address": "198.19.0.11:8080", "weight": 3, "upper_threshold": 0,
                             "lower_threshold": 0}}


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["-h"]) == 0
    assert "--set tcp tcpfin udp" in capsys.readouterr().out
    assert ctl.main(["--version"]) == 0
    assert "ipvsadm-compatible" in capsys.readouterr().out


def test_unreachable_socket_is_a_clear_error(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl.main(["-Ln", "--socket", f"{tmp_path}/absent.sock"]) == 1
    assert "no such socket" in capsys.readouterr().err


def test_fwmark_service() -> None:
    req = ctl.parse_args(["-A", "-f", "80", "-s", "wlc", "-p", "300"])
    assert (req.command, req.fwmark, req.scheduler, req.persistence) == \
        ("add-service", 80, "wlc", 300)
    req = ctl.parse_args(["-a", "-f", "80", "-r", "198.19.0.11", "-m"])
    assert req.fwmark == 80 and str(req.server) == "198.19.0.11:0"
    req = ctl.parse_args(["-A", "-f", "81"])  # a fwmark service need not be persistent
    assert req.persistence == 0


def test_ipv6_fwmark_service_as_ipvsadm() -> None:
    # ipvsadm: -6 qualifies the -f before it (the kernel keys fwmark services by family)
    req = ctl.parse_args(["-A", "-f", "1", "-6", "-s", "rr", "-p", "300", "-M", "64"])
    assert (req.fwmark, str(req.service), req.netmask) == (1, "[::]:0", 64)
    op = ctl.to_operation(req)
    assert op["service"]["fwmark"] == 1 and op["service"]["address"] == "[::]:0"
    edit = ctl.to_operation(ctl.parse_args(["-E", "-f", "1", "-6", "-s", "wlc"]))
    assert (edit["protocol"], edit["address"]) == ("fwm6", "1")
    assert "address" not in edit["changes"]  # the service's own VIP (if any) stays
    req = ctl.parse_args(["-a", "-f", "1", "-6", "-r", "[2001:2:1::11]:80", "-m"])
    assert str(req.server) == "[2001:2:1::11]:80"
    assert ctl.to_operation(req)["protocol"] == "fwm6"
    assert ctl.to_operation(ctl.parse_args(["-D", "-f", "1"]))["protocol"] == "fwm"
    with pytest.raises(ctl.CtlError, match="-6 used before -f"):
        ctl.parse_args(["-A", "-6", "-f", "1"])
    with pytest.raises(ctl.CtlError, match="-6 used before -f"):
        ctl.parse_args(["-A", "-t", "[2001:2::100]:80", "-6"])
    with pytest.raises(ctl.CtlError, match="illegal ipv6 netmask"):
        ctl.parse_args(["-A", "-f", "1", "-6", "-p", "-M", "255.255.255.0"])


def test_synproxy_flag_like_alibabas_ipvsadm() -> None:
    req = ctl.parse_args(["-A", "-t", "198.18.0.100:80", "-s", "rr", "-j", "enable"])
    assert req.synproxy is True and ctl.to_operation(req)["service"]["synproxy"] is True
    req = ctl.parse_args(["-E", "-t", "198.18.0.100:80", "--synproxy", "disable"])
    assert req.synproxy is False
    assert ctl.parse_args(["-A", "-t", "198.18.0.100:80"]).synproxy is None
    with pytest.raises(ctl.CtlError, match="synproxy"):
        ctl.parse_args(["-A", "-t", "198.18.0.100:80", "-j", "maybe"])
    with pytest.raises(ctl.CtlError, match="Illegal"):
        ctl.parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11", "-j", "enable"])
