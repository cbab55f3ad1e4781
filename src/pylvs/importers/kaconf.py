"""keepalived.conf: reading it (includes, ``@id`` lines, ``$PARAM`` substitution) into a tree.

keepalived.conf(5): comments start with ``#`` or ``!`` anywhere outside quotes; ``include
FILE`` (and ``includer``/``includem``/``includew``/``includeb``/``includea``) reads other files,
glob patterns allowed, relative to the including file's directory; a line starting with
``@ID`` is kept only when keepalived runs with ``-i ID`` (``@^ID``: only when it does not);
``$NAME=VALUE`` defines a parameter that ``$NAME`` (followed by whitespace) or ``${NAME}`` is
replaced with, recursively, and a definition whose line ends with ``\\`` continues on the next.
The mapping to pylvs's model is in :mod:`pylvs.importers.keepalived`.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from pylvs.importers.tokens import ImportSyntaxError, Node, SourceLine, parse_blocks

__all__ = ["looks_like", "parse", "read_lines"]

_INCLUDE = re.compile(r"^\s*include[rmwba]?\s+(.+?)\s*$")
_DEFINE = re.compile(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_COND = re.compile(r"^\s*@(\^?)(\S+)\s+(.*)$")
_MAX_DEPTH = 8  # nested includes; keepalived has no limit, a loop would never end
_MAX_SUBST = 32


def looks_like(text: str) -> bool:
    """True when ``text`` reads as a keepalived.conf (its top-level block names)."""
    return bool(re.search(r"^\s*(virtual_server(_group)?|vrrp_instance|global_defs|"
                          r"vrrp_sync_group|include)\b[^=\n]*(\{|$)", text, re.M))


def _substitute(text: str, params: dict[str, str], where: str) -> str:
    for _ in range(_MAX_SUBST):
        def repl(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return params.get(name, m.group(0))
        new = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)(?=\s|$)",
                     repl, text)
        if new == text:
            return new
        text = new
    raise ImportSyntaxError(where, "parameter substitution does not end (a $PARAM refers to "
                            "itself)")


def read_lines(path: Path, config_id: str | None, display: str | None = None,
               depth: int = 0, params: dict[str, str] | None = None) -> list[SourceLine]:
    """The lines of ``path`` with includes expanded, conditionals and parameters applied."""
    params = {} if params is None else params
    name = display or str(path)
    try:
        raw = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ImportSyntaxError(name, f"cannot read: {exc.strerror or exc}") from None
    out: list[SourceLine] = []
    i = 0
    while i < len(raw):
        number, text = i + 1, raw[i]
        i += 1
        where = f"{name}:{number}"
        cond = _COND.match(text)
        if cond:
            negate, ident, rest = cond.groups()
            if (ident == config_id) == bool(negate):
                continue
            text = rest
        define = _DEFINE.match(text)
        if define:
            value = define.group(2)
            while value.endswith("\\") and i < len(raw):
                value = value[:-1] + "\n" + raw[i]
                i += 1
            params[define.group(1)] = value.rstrip("\\")
            continue
        text = _substitute(text, params, where)
        for part in text.split("\n"):  # a multi-line parameter expands to several lines
            inc = _INCLUDE.match(part)
            if inc:
                if depth >= _MAX_DEPTH:
                    raise ImportSyntaxError(where, f"includes nested deeper than {_MAX_DEPTH}")
                pattern = re.split(r"\s[#!]", inc.group(1))[0].strip().strip("\"'")
                base = path.parent
                matches = sorted(glob.glob(str(base / pattern)))
                if not matches:
                    raise ImportSyntaxError(where, f"include {pattern!r}: no such file")
                for m in matches:
                    out.extend(read_lines(Path(m), config_id, None, depth + 1, params))
                continue
            out.append(SourceLine(name, number, part))
    return out


def parse(path: Path, config_id: str | None, display: str | None = None) -> list[Node]:
    """The statement tree of a keepalived.conf and everything it includes."""
    lines = read_lines(path, config_id, display)
    return parse_blocks(lines, comment_chars="#!", escapes=True)
