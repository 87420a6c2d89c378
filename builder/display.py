"""What a person reads: text from a request, approval or host shown so it cannot rewrite the screen.

A request's reason, requester, scope and image name come from another
machine. Written raw to a terminal, a CR or LF draws fake ``scope:`` lines
under the real ones, an ESC sequence moves the cursor or clears the screen,
and a bidi override (U+202E) shows the line's end in reverse. ``escape``
writes every such character as a visible escape instead.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str, *, backslash: bool = True) -> str:
    """``text`` with every character a terminal would not simply print written as an escape.

    Escaped: C0 controls, DEL, C1 controls (ESC, CSI, ...), bidi embeddings,
    overrides and isolates (U+202A-U+202E, U+2066-U+2069), line and paragraph
    separators, other format and unassigned characters, and lone surrogates:
    whatever ``str.isprintable`` refuses, except the plain space. With
    ``backslash`` (the default) a backslash is doubled, so that text which
    already looks like an escape cannot pass for one. Never raises.
    """
    if text.isprintable() and (not backslash or "\\" not in text):
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\" if backslash else ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escaped(ch))
    return "".join(out)
