"""``pylvs import``: piranha's ``lvs.cf`` and ``keepalived.conf`` -> a pylvs configuration.

* :mod:`.tokens`: the block grammar both formats share (words, quotes, braces, comments).
* :mod:`.lvscf`: lvs.cf's reader and its mapping; :mod:`.kaconf` reads keepalived.conf
  (includes, ``@id`` lines, parameters) and :mod:`.keepalived` maps it.
* :mod:`.result`: the configuration plus a note for every setting that did not carry over,
  rendered by :func:`pylvs.config.dump_toml` with the notes as comments.

:func:`import_file` is the whole pipeline: it validates the result with
:func:`pylvs.config.validate`, so what it returns passes ``pylvs check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pylvs.importers.common import ImportOptions
from pylvs.importers.result import ImportResult, Note
from pylvs.importers.tokens import ImportSyntaxError

__all__ = ["Format", "ImportOptions", "ImportResult", "ImportSyntaxError", "Note",
           "detect_format", "import_file"]

Format = Literal["lvs.cf", "keepalived"]


def detect_format(path: Path, text: str) -> Format:
    """``lvs.cf`` or ``keepalived`` from the file name, else from what the text looks like."""
    from pylvs.importers import kaconf, lvscf

    name = path.name.lower()
    if name.endswith(".cf") or name.startswith("lvs"):
        return "lvs.cf"
    if "keepalived" in name:
        return "keepalived"
    if lvscf.looks_like(text):
        return "lvs.cf"
    if kaconf.looks_like(text):
        return "keepalived"
    raise ImportSyntaxError(str(path), "cannot tell whether this is an lvs.cf or a "
                            "keepalived.conf; pass --format")


def import_file(path: str | Path, fmt: Format | None = None,
                options: ImportOptions | None = None) -> ImportResult:
    """Read ``path`` and map it; raises :class:`ImportSyntaxError` (``file:line: ...``)."""
    from pylvs import config as config_mod
    from pylvs.importers import kaconf, keepalived, lvscf

    opts = options or ImportOptions()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ImportSyntaxError(str(p), f"cannot read: {exc.strerror or exc}") from None
    fmt = fmt or detect_format(p, text)
    if fmt == "lvs.cf":
        cfg, notes = lvscf.to_config(lvscf.parse(text, str(p)), str(p), opts)
        label = "piranha lvs.cf"
    else:
        cfg, notes = keepalived.to_config(kaconf.parse(p, opts.config_id, str(p)), str(p), opts)
        label = "keepalived.conf"
    config_mod.validate(cfg)
    return ImportResult(cfg, tuple(notes.items), label)
