"""bench.isolation's measuring parts on a real HA pair, briefly (root; about 25 s).

The benchmark's figures are only as good as its captures: this checks that tcpdump on the
switch ports sees the active director's heartbeats at the configured interval on both paths,
that the status API is sampled, and that probes sent through the VIP are paired entering and
leaving the director while a small site is restored and reloaded.  The isolation goals
themselves are measured by ``python3 -m bench.isolation`` (bench/RESULTS.md), not asserted
here: a loaded CI machine would make them flaky.
"""

from __future__ import annotations

import argparse

from bench.isolation import ha_phase, reload_gaps
from pylvs.model import HaConfig
from pylvs.testbed.hapair import HaPair


def test_heartbeats_on_the_wire_and_probes_through_a_reload() -> None:
    interval = HaConfig().interval
    with HaPair(prefix="iso") as pair:
        pair.start(0)
        pair.wait(lambda: pair.owns_vip(0), 20, "dir1 to become active")
        pair.start(1)
        pair.wait(lambda: pair.is_backup(1), 20, "dir2 to run as backup")

        idle = ha_phase(pair, "idle", 3.0, interval, None)
        for path in ("public", "private"):
            beats = idle[path]
            # about 30 heartbeats in 3 s; the median interval is the configured one
            assert 15 <= beats["n"] <= 40, beats
            assert abs(beats["p50"]) < interval / 2, beats
            assert beats["capture_dropped"] == 0
        assert idle["api"]["n"] >= 15 and idle["api"]["failed"] == 0
        assert idle["still_active"]

        args = argparse.Namespace(services=20, per_service=5, quiet=1.0, steady=0.5, sched=False,
                                  timeout=30.0)
        res = reload_gaps(pair, args)
        assert res["restore_error"] is None and res["reload_line"].startswith("SIGHUP: reloaded")
        assert res["servers_loaded"] == 100 + 6  # the site plus the pair's own two services
        for name, window in res["windows"].items():
            assert window["probes"] > 0, name
            # every probe the director saw enter was seen leaving it, both ways
            assert window["requests"]["n"] > 0 and window["replies"]["n"] > 0, name
            assert window["requests"]["never_left"] == 0, (name, window)
            assert window["requests"]["max"] < 1.0, (name, window)
