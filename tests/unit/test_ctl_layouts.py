"""ipvsadm's output layouts, checked against text written out from ipvsadm's printf formats."""

from __future__ import annotations

from typing import Any

import pytest

from pylvs.cli import layouts


def _svc(address: str, servers: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "protocol": "tcp", "address": address, "scheduler": "wlc", "persistence": 0,
        "netmask": "255.255.255.255", "flags": [],
        "stats": dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0),
        "rates": dict.fromkeys(("cps", "inpps", "outpps", "inbps", "outbps"), 0),
        "real_servers": servers,
    }
    base.update(kw)
    return base


def _rs(address: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "address": address, "weight": 1, "effective_weight": 1, "upper_threshold": 0,
        "lower_threshold": 0, "active_conns": 0, "inactive_conns": 0, "persist_conns": 0,
        "stats": dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0),
        "rates": dict.fromkeys(("cps", "inpps", "outpps", "inbps", "outbps"), 0),
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, "  100000K"),
        (999_999_999, "  999999K"),
        (1_000_000_000, "    1000M"),
        (2_110_000_000, "    2110M"),
        (99_999_999_999, "   99999M"),
        (100_000_000_000, "     100G"),
        (100_000_000_000_000, "     100T"),
    ],
)
def test_largenum_matches_print_largenum(value: int, text: str) -> None:
    assert layouts.largenum(value) == text


def test_largenum_exact_is_at_least_nine_wide() -> None:
    assert layouts.largenum(5, exact=True) == "        5"
    assert layouts.largenum(1_234_567_890, exact=True) == " 1234567890"


def test_list_numeric_layout_sorted_with_trailing_padding() -> None:
    services = [
        _svc("198.18.0.100:443", [], protocol="udp", scheduler="rr"),
        _svc("198.18.0.100:80", [
            _rs("198.19.0.12:80", effective_weight=0, weight=3),
            _rs("198.19.0.11:80", active_conns=12, inactive_conns=3),
        ], persistence=360, netmask="255.255.255.0"),
    ]
    out = layouts.listing(services, layouts.Format(numeric=True))
    assert out == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 wlc persistent 360 mask 255.255.255.0\n"
        "  -> 198.19.0.11:80               Masq    1      12         3         \n"
        "  -> 198.19.0.12:80               Masq    0      0          0         \n"
        "UDP  198.18.0.100:443 rr\n"
    )


def test_single_service_listing_has_no_version_line() -> None:
    out = layouts.listing([_svc("198.18.0.100:80", [])], layouts.Format(numeric=True),
                          single=True)
    assert out.splitlines()[0] == "Prot LocalAddress:Port Scheduler Flags"


def test_stats_layout() -> None:
    stats = {"conns": 113786, "inpkts": 19495479, "outpkts": 0, "inbytes": 2_110_000_000,
             "outbytes": 0}
    rstats = {"conns": 12883, "inpkts": 1679941, "outpkts": 0, "inbytes": 181_747_000,
              "outbytes": 0}
    services = [_svc("10.0.0.1:80", [_rs("192.168.1.2:80", stats=rstats)], stats=stats)]
    out = layouts.listing(services, layouts.Format(numeric=True, stats=True))
    assert out.splitlines()[1:] == [
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80                    113786 19495479        0    2110M        0",
        "  -> 192.168.1.2:80                  12883  1679941        0  181747K        0",
    ]


def test_rate_layout_dest_uses_plain_u32_for_cps_and_pps() -> None:
    rates = {"cps": 5, "inpps": 40, "outpps": 38, "inbps": 4000, "outbps": 120_000_000}
    services = [_svc("10.0.0.1:80", [_rs("192.168.1.2:80", rates=rates)], rates=rates)]
    out = layouts.listing(services, layouts.Format(numeric=True, rate=True))
    assert out.splitlines()[1:] == [
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80                         5       40       38     4000  120000K",
        "  -> 192.168.1.2:80                      5       40       38     4000  120000K",
    ]


def test_thresholds_and_persistent_conn_layouts() -> None:
    services = [_svc("10.0.0.1:80", [_rs("192.168.1.2:80", upper_threshold=100,
                                          lower_threshold=50, active_conns=7, persist_conns=2,
                                          effective_weight=4)])]
    thr = layouts.listing(services, layouts.Format(numeric=True, thresholds=True))
    assert thr.splitlines()[1:] == [
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80 wlc",
        "  -> 192.168.1.2:80               100        50         7          0         ",
    ]
    pc = layouts.listing(services, layouts.Format(numeric=True, persistent_conn=True))
    assert pc.splitlines()[1] == (
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ")
    assert pc.splitlines()[4] == (
        "  -> 192.168.1.2:80               4         2           7          0         ")


def test_names_are_cut_at_33_and_28_characters() -> None:
    # Without -n, names resolve; a long service name is cut exactly like svc_name[33] = '\0'.
    layouts._host.cache_clear()
    services = [_svc("198.18.255.254:65535", [_rs("198.19.255.254:65535")])]
    out = layouts.listing(services, layouts.Format(numeric=True, stats=True)).splitlines()
    assert out[3].startswith("TCP  198.18.255.254:65535        ")
    assert len(out[3]) == 33 + 5 * 9


def test_connections_layout() -> None:
    conns = [{"protocol": "tcp", "expires": 899, "state": "ESTABLISHED",
              "client": "198.18.0.50:40000", "virtual": "198.18.0.100:80",
              "server": "198.19.0.11:80"},
             {"protocol": "udp", "expires": 5, "state": "UDP",
              "client": "198.18.0.50:5353", "virtual": "198.18.0.100:53",
              "server": "198.19.0.12:53"}]
    assert layouts.connections(conns, numeric=True) == (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:59  ESTABLISHED 198.18.0.50:40000  198.18.0.100:80    198.19.0.11:80\n"
        "UDP 00:05  UDP         198.18.0.50:5353   198.18.0.100:53    198.19.0.12:53\n"
    )


def test_timeout_layout() -> None:
    assert layouts.timeouts({"tcp": 900, "tcpfin": 120, "udp": 300}) == (
        "Timeout (tcp tcpfin udp): 900 120 300\n")


def test_save_rules() -> None:
    services = [
        _svc("198.18.0.100:80", [_rs("198.19.0.12:8080", weight=3, effective_weight=0),
                                 _rs("198.19.0.11:80")], persistence=360,
             netmask="255.255.255.0"),
        _svc("198.18.0.100:53", [], protocol="udp", scheduler="sh", flags=["sh-port"]),
    ]
    assert layouts.rules(services, numeric=True) == (
        "-A -t 198.18.0.100:80 -s wlc -p 360 -M 255.255.255.0\n"
        "-a -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 1\n"
        "-a -t 198.18.0.100:80 -r 198.19.0.12:8080 -m -w 3\n"
        "-A -u 198.18.0.100:53 -s sh -b sh-port\n"
    )


def test_without_numeric_names_are_resolved_like_ipvsadm() -> None:
    import socket

    try:
        host = socket.gethostbyaddr("127.0.0.1")[0]
        port = socket.getservbyport(80, "tcp")
    except OSError:
        pytest.skip("no name for 127.0.0.1 or port 80 on this machine")
    services = [_svc("127.0.0.1:80", [_rs("127.0.0.1:81")])]
    lines = layouts.listing(services, layouts.Format()).splitlines()
    assert lines[3] == f"TCP  {host}:{port}"[:33] + " wlc"  # svc_name is cut at 33
    assert lines[4].startswith(f"  -> {host}:")
    assert layouts.rules(services).startswith(f"-A -t {host}:{port} -s wlc\n")


def test_synproxy_shows_in_the_listing_and_saves_as_dash_j() -> None:
    services = [_svc("198.18.0.100:80", [], scheduler="rr", synproxy=True)]
    out = layouts.listing(services, layouts.Format(numeric=True))
    assert "TCP  198.18.0.100:80 rr synproxy" in out
    assert layouts.rules(services, numeric=True).startswith(
        "-A -t 198.18.0.100:80 -s rr -j enable\n")
    assert "synproxy" not in layouts.listing([_svc("198.18.0.100:80", [])],
                                             layouts.Format(numeric=True))
@pytest.mark.parametrize(("scheduler", "flags", "shown"), [
    ("mh", ["mh-port"], "mh (mh-port)"),
    ("sh", ["sh-port", "sh-fallback"], "sh (sh-fallback,sh-port)"),  # bit order, not input order
    ("sh", ["flag-1", "flag-3"], "sh (sh-fallback,flag-3)"),  # the bits carry the meaning
    ("mh", ["flag-2"], "mh (mh-port)"),
    ("rr", ["flag-1", "flag-2", "flag-3"], "rr (flag-1,flag-2,flag-3)"),
    ("wlc", [], "wlc"),
])
def test_listing_shows_scheduler_flags_like_print_sched_flags(
    scheduler: str, flags: list[str], shown: str
) -> None:
    services = [_svc("198.18.0.100:8080", [_rs("198.19.0.11:80")], scheduler=scheduler,
                     flags=flags, persistence=300)]
    for fmt in (layouts.Format(numeric=True), layouts.Format(numeric=True, thresholds=True),
                layouts.Format(numeric=True, persistent_conn=True),
                layouts.Format(numeric=True, nosort=True)):
        line = layouts.listing(services, fmt).splitlines()[3]
        assert line == f"TCP  198.18.0.100:8080 {shown} persistent 300", fmt
    rules = layouts.rules(services, numeric=True).splitlines()[0]
    expected_b = f" -b {shown.partition('(')[2].rstrip(')')}" if flags else ""
    assert rules == f"-A -t 198.18.0.100:8080 -s {scheduler} -p 300{expected_b}"


def test_connections_with_persistent_conn_adds_the_pe_columns() -> None:
    conns = [{"protocol": "tcp", "expires": 899, "state": "ESTABLISHED",
              "client": "198.18.0.50:40000", "virtual": "198.18.0.100:80",
              "server": "198.19.0.11:80"}]
    assert layouts.connections(conns, numeric=True, persistent_conn=True) == (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination"
        "        pe name          pe_data\n"
        "TCP 14:59  ESTABLISHED 198.18.0.50:40000  198.18.0.100:80    198.19.0.11:80    "
        "                  \n"
    )
