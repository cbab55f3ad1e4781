"""What an import produced: the configuration, and a note for every setting it could not carry.

A note is either *dropped* (the source did something the written pylvs.toml will not do: the
import exits non-zero) or *informational* (an assumption the operator should check, or a source
key with no effect on pylvs, such as piranha's ``serial_no``).  Each note names the table it
belongs to, so :meth:`ImportResult.render` writes it as a comment just above that table.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pylvs.config import dump_toml
from pylvs.importers.tokens import Node
from pylvs.model import Config

__all__ = ["ImportResult", "Note", "Notes"]


@dataclass(frozen=True, slots=True)
class Note:
    """One comment for the output: the table it sits above, the source line and the text."""

    table: str  # "" (file header), "director", "ha", "virtual_server[0]", "...real_server[1]"
    where: str  # "file:line" of the source setting
    text: str
    dropped: bool

    def line(self) -> str:
        """How the comment reads in pylvs.toml."""
        tag = "DROPPED" if self.dropped else "NOTE"
        return f"{tag} {self.where}: {self.text}"


class Notes:
    """Collects notes while a source file is mapped."""

    def __init__(self) -> None:
        self.items: list[Note] = []

    def dropped(self, table: str, node: Node | str, why: str) -> None:
        """``node`` has no equivalent: say so and why."""
        where, what = _source(node)
        self.items.append(Note(table, where, f"{what}{why}", True))

    def info(self, table: str, node: Node | str, text: str) -> None:
        """An assumption or a key without effect on pylvs; not counted as dropped."""
        where, what = _source(node)
        self.items.append(Note(table, where, f"{what}{text}", False))


def _source(node: Node | str) -> tuple[str, str]:
    """``file:line`` and the setting as the operator wrote it (clipped), for a note."""
    if isinstance(node, str):
        return node, ""
    text = node.line.text.strip()
    if len(text) > 70:
        text = text[:67] + "..."
    return node.where, f"{text!r}: " if text else ""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The imported configuration and the notes about it."""

    config: Config
    notes: tuple[Note, ...]
    source_format: str  # "lvs.cf" or "keepalived.conf"

    @property
    def dropped(self) -> tuple[Note, ...]:
        """The notes about settings that were not carried over."""
        return tuple(n for n in self.notes if n.dropped)

    def render(self) -> str:
        """The pylvs.toml text, every note as a comment above its table."""
        by_table: defaultdict[str, list[str]] = defaultdict(list)
        header = (f"imported from {self.config.source} ({self.source_format}) by pylvs import: "
                  f"{len(self.dropped)} setting(s) dropped, see the DROPPED comments")
        by_table[""].append(header)
        for note in self.notes:
            by_table[note.table].append(note.line())
        return dump_toml(self.config, by_table)
