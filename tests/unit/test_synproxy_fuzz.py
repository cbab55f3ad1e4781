"""A short run of bench/fuzz_synproxy.py: no crash, and nothing reaches a real server without a
connection (the full run, 10^6 packets under ASan/UBSan, is in its docstring)."""

from __future__ import annotations

from bench.fuzz_synproxy import run


def test_fuzzed_packets_never_reach_a_server_without_a_connection() -> None:
    f = run(20_000, seed=3)
    st = f.e.stats()
    assert st.events["synproxy_ack_ok"] > 0 and f.sent_to_rs > 0  # the mix did open conns
    assert st.drops["synproxy_bad_cookie"] > 0
    assert st.connections == 0  # everything expired, nothing stuck


def test_the_same_mix_through_syncookies_never_reaches_a_server_without_a_connection() -> None:
    """Plain services with syncookies always on: the path of every TCP service in a flood."""
    f = run(20_000, seed=4, syncookies=True)
    st = f.e.stats()
    assert st.events["syncookie_ack_ok"] > 0 and f.sent_to_rs > 0
    refused = st.drops["syncookie_bad_cookie"] + st.drops["syncookie_expired_cookie"]
    assert refused > 0 and st.events.get("synproxy_syn", 0) == 0
    assert st.connections == 0
