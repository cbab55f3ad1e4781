"""``pylvs import``: write a pylvs.toml equivalent to a piranha lvs.cf or a keepalived.conf.

Exit status: 0 when every setting carried over, 1 when the configuration was written but some
settings were dropped (each has a ``# DROPPED file:line:`` comment above its table), 2 when the
file could not be read or imported (the error names ``file:line``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pylvs.errors import ConfigError

__all__ = ["main"]

EXIT_OK = 0
EXIT_DROPPED = 1
EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pylvs import",
        description="Print a pylvs.toml equivalent to a piranha lvs.cf or a keepalived.conf. "
                    "Settings without an equivalent are written as comments; the exit status "
                    "is 1 when any was dropped.")
    p.add_argument("file", help="the lvs.cf or keepalived.conf to import")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--format", choices=("lvs.cf", "keepalived"),
                   help="the input format (default: from the file name, else its content)")
    p.add_argument("--public-interface", metavar="IF",
                   help="director.public_interface (default: from the file, else eth0)")
    p.add_argument("--private-interface", metavar="IF",
                   help="director.private_interface (default: from the file, else eth1)")
    p.add_argument("--node", choices=("primary", "backup"), default="primary",
                   help="lvs.cf: write the primary's or the backup's configuration")
    p.add_argument("-i", "--config-id", metavar="ID",
                   help="keepalived.conf: the config id that selects '@ID' lines (keepalived -i)")
    p.add_argument("--secret-file", metavar="FILE", default="/etc/pylvs/ha.key",
                   help="ha.secret_file to write when failover is imported")
    return p


def main(argv: Sequence[str]) -> int:
    """Run ``pylvs import``; returns the exit status."""
    from pylvs.importers import ImportOptions, ImportSyntaxError, import_file

    args = _parser().parse_args(list(argv))
    opts = ImportOptions(public_interface=args.public_interface,
                         private_interface=args.private_interface, node=args.node,
                         config_id=args.config_id, secret_file=args.secret_file)
    try:
        result = import_file(args.file, args.format, opts)
    except ImportSyntaxError as exc:
        print(f"pylvs import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ConfigError as exc:
        print(f"pylvs import: the imported configuration is not valid:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    text = result.render()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"pylvs import: cannot write {args.output}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_ERROR
    else:
        sys.stdout.write(text)
    for note in result.dropped:
        print(f"pylvs import: dropped: {note.where}: {note.text}", file=sys.stderr)
    if args.output:
        cfg = result.config
        print(f"pylvs import: wrote {args.output} ({len(cfg.virtual_servers)} virtual servers, "
              f"{len(result.dropped)} settings dropped)", file=sys.stderr)
    return EXIT_DROPPED if result.dropped else EXIT_OK
