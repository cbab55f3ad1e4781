"""Command line entry point: ``pylvs serve|check|demo|ctl|status|import``.

Each subcommand lives in its own module; this file only dispatches, importing lazily so that
``pylvs ctl`` does not pay for the dataplane and ``pylvs check`` never touches the network.

* ``daemon``: ``pylvs serve`` and ``pylvs check``.
* ``ctl``: ``pylvs ctl`` (ipvsadm's options against the control API) and ``pylvs status``.
* ``layouts``: ipvsadm's listing layouts; ``status``: the human status summary.
* ``importer``: ``pylvs import`` (piranha lvs.cf and keepalived.conf, :mod:`pylvs.importers`).
* ``pylvs demo`` lives with the namespace testbed (:mod:`pylvs.testbed.demo`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

__all__ = ["main"]

# subcommand -> (module, function, one-line help). Each function takes argv and returns an
# exit status.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("pylvs.cli.daemon", "serve_main", "run the director in the foreground"),
    "check": ("pylvs.cli.daemon", "check_main",
              "validate a config file without touching the network"),
    "demo": ("pylvs.testbed.demo", "main",
             "build the two-tier topology in namespaces and show it working"),
    "ctl": ("pylvs.cli.ctl", "main", "administer a running director with ipvsadm's options"),
    "status": ("pylvs.cli.ctl", "status_main", "print a human summary of a running director"),
    "import": ("pylvs.cli.importer", "main",
               "print a pylvs.toml equivalent to a piranha lvs.cf or a keepalived.conf"),
}


def _usage() -> str:
    lines = ["usage: pylvs <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pylvs`` command line and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from pylvs import __version__

        print(f"pylvs {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"pylvs: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function, _ = entry
    run: Callable[[list[str]], int] = getattr(import_module(module), function)
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
