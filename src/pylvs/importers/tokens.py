"""The block grammar piranha's ``lvs.cf`` and ``keepalived.conf`` share: words, quotes, braces.

Both files are lines of words; a line whose last word is ``{`` opens a block that the matching
``}`` closes, and ``#`` (keepalived also ``!``) starts a comment anywhere outside quotes.  The
formats differ only in small ways, given as arguments:

* ``comment_chars``: ``"#"`` for lvs.cf, ``"#!"`` for keepalived.conf (keepalived.conf(5):
  "Comments start with '#' or '!' to the end of the line and can start anywhere").
* ``escapes``: keepalived decodes shell-like escapes inside quotes (``\\n``, ``\\t``, ``\\xHH``,
  ``\\nnn`` ...); lvs.cf keeps the text between its quotes as written, because nanny decodes
  ``\\r\\n`` itself (and so does pylvs's ``send``/``expect``).

A quoted part joins the word it touches (``abc"d e"f`` is one word ``abcd ef``), as in
keepalived.  :func:`parse_blocks` turns the words into a tree of :class:`Node`; every node
keeps the file and line it came from, so a mapping note or an error can name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["ImportSyntaxError", "Node", "SourceLine", "Word", "parse_blocks", "split_words"]


class ImportSyntaxError(ValueError):
    """A file that cannot be read as its format; the message starts with ``file:line:``."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class SourceLine:
    """One line of input and where it came from (an include keeps its own file name)."""

    file: str
    number: int
    text: str

    @property
    def where(self) -> str:
        """``file:line``, how notes and errors name the line."""
        return f"{self.file}:{self.number}"


@dataclass(frozen=True, slots=True)
class Word:
    """A word of a line; ``quoted`` tells ``"{"`` (text) from ``{`` (a brace)."""

    text: str
    quoted: bool = False


@dataclass(slots=True)
class Node:
    """A statement: its keyword, the words after it, its line and, for a block, its children."""

    keyword: str
    args: list[str]
    line: SourceLine
    children: list[Node] | None = None
    used: bool = field(default=False, compare=False)

    @property
    def where(self) -> str:
        """``file:line`` of the statement."""
        return self.line.where

    def find(self, keyword: str) -> list[Node]:
        """The children named ``keyword`` (case-sensitive, as both daemons read them)."""
        return [c for c in self.children or () if c.keyword == keyword]


_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
            "v": "\v"}


def _escape(text: str, i: int) -> tuple[str, int]:
    """Decode the keepalived escape starting after the backslash at ``text[i - 1]``."""
    c = text[i]
    if c in _ESCAPES:
        return _ESCAPES[c], i + 1
    if c == "x":
        j = i + 1
        while j < len(text) and text[j] in "0123456789abcdefABCDEF":
            j += 1
        if j > i + 1:
            return chr(int(text[i + 1:j], 16) & 0xFF), j
        return "x", i + 1
    if c in "01234567":
        j = i
        while j < len(text) and j < i + 3 and text[j] in "01234567":
            j += 1
        return chr(int(text[i:j], 8) & 0xFF), j
    if c == "c" and i + 1 < len(text):
        return chr(ord(text[i + 1]) & 0x1F), i + 2
    return c, i + 1


def split_words(line: SourceLine, comment_chars: str, escapes: bool) -> list[Word]:
    """Split one line into words; braces outside quotes are words of their own."""
    text = line.text
    words: list[Word] = []
    cur: list[str] = []
    in_word = quoted_any = False
    i = 0

    def flush() -> None:
        nonlocal in_word, quoted_any
        if in_word:
            words.append(Word("".join(cur), quoted_any))
        cur.clear()
        in_word = quoted_any = False

    while i < len(text):
        c = text[i]
        if c in "\"'":
            end = i + 1
            part: list[str] = []
            while end < len(text) and text[end] != c:
                if escapes and text[end] == "\\" and end + 1 < len(text):
                    decoded, end = _escape(text, end + 1)
                    part.append(decoded)
                    continue
                if not escapes and text[end] == "\\" and end + 1 < len(text):
                    part.append(text[end:end + 2])  # kept as written: \" does not end it
                    end += 2
                    continue
                part.append(text[end])
                end += 1
            if end >= len(text):
                raise ImportSyntaxError(line.where, f"unterminated {c}quoted string{c}")
            cur.extend(part)
            in_word = quoted_any = True
            i = end + 1
        elif c in comment_chars:
            break
        elif c.isspace():
            flush()
            i += 1
        elif c in "{}":
            flush()
            words.append(Word(c))
            i += 1
        else:
            cur.append(c)
            in_word = True
            i += 1
    flush()
    return words


def parse_blocks(lines: Iterable[SourceLine], comment_chars: str, escapes: bool,
                 separators: Sequence[str] = ()) -> list[Node]:
    """Build the statement tree of ``lines``.

    A statement is the words of one line up to a ``{``, a ``}`` or the end of the line; a ``{``
    makes the statement before it (or an empty one) a block.  ``separators`` are words dropped
    after the keyword (lvs.cf's ``=``).  Raises :class:`ImportSyntaxError` for a ``}`` without
    its ``{`` and for a block still open at the end.
    """
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node]]] = [(None, root)]
    last: SourceLine | None = None
    for line in lines:
        last = line
        pending: list[Word] = []
        for word in split_words(line, comment_chars, escapes):
            if word.text == "{" and not word.quoted:
                _emit(pending, line, stack, separators, block=True)
            elif word.text == "}" and not word.quoted:
                _emit(pending, line, stack, separators, block=False)
                if len(stack) == 1:
                    raise ImportSyntaxError(line.where, "'}' without a block to close")
                stack.pop()
            else:
                pending.append(word)
        _emit(pending, line, stack, separators, block=False)
    if len(stack) > 1:
        opened = stack[-1][0]
        assert opened is not None
        end = last.where if last else "<empty>"
        raise ImportSyntaxError(end, f"end of file inside the block opened at {opened.where} "
                                f"({opened.keyword} ...): a '}}' is missing")
    return root


def _emit(pending: list[Word], line: SourceLine, stack: list[tuple[Node | None, list[Node]]],
          separators: Sequence[str], block: bool) -> None:
    """Turn the words gathered so far into a statement (a block when ``block``)."""
    if not pending and not block:
        return
    keyword = pending[0].text if pending else ""
    args = [w.text for w in pending[1:]]
    if args and args[0] in separators and not pending[1].quoted:
        args = args[1:]
    node = Node(keyword, args, line, [] if block else None)
    stack[-1][1].append(node)
    if node.children is not None:
        stack.append((node, node.children))
    pending.clear()
