"""One error type for everything a user can get wrong, rendered the way compilers do.

Every message a user sees about a model file goes through NetcError so that it always
names FILE:LINE:COL, shows the offending line with a caret, and suggests a near name.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class NetcError(Exception):
    """A problem in user input. `loc` points into the file; `source` lets us quote the line."""

    def __init__(self, message: str, loc: Loc | None = None, *, source: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source
        self.hint = hint

    def render(self) -> str:
        message = plain(self.message, keep="\t")
        head = f"{plain(str(self.loc))}: error: {message}" if self.loc else f"error: {message}"
        lines = [head]
        text = self.source
        if text is None and self.loc is not None:
            text = _read_quietly(self.loc.file)
        if text is not None and self.loc is not None:
            src_lines = text.splitlines() or [""]  # an empty file still gets its caret
            if 1 <= self.loc.line <= len(src_lines):
                line = src_lines[self.loc.line - 1].expandtabs(1)
                if len(line) > 200:  # keep huge single-line files readable
                    start = max(0, self.loc.column - 100)
                    line = line[start:start + 200]
                    col = self.loc.column - start
                else:
                    col = self.loc.column
                lines.append("    " + _CONTROL.sub("\ufffd", line))  # one char each: the caret stays put
                lines.append("    " + " " * max(col - 1, 0) + "^")
        if self.hint:
            lines.append("  hint: " + plain(self.hint, keep="\t"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class SoftShapeError(NetcError):
    """A shape Caffe would reject but Netscope shows anyway (some of its presets rely on it), or
    one Caffe builds but netc's kernels cannot run (`caffe_accepts`: a window larger than its
    input, as placeholder inputs sized at run time give). Native files get the error; Caffe
    files get a warning and `fallback` as the output shapes; running either is refused."""

    def __init__(self, message, loc, fallback, caffe_accepts: bool = False):
        super().__init__(message, loc)
        self.fallback = fallback
        self.caffe_accepts = caffe_accepts


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPED = re.compile(r"[\x00-\x1f\x7f-\x9f]")     # C0, DEL and C1 (\x9b is a one-byte CSI)


def plain(text: str, keep: str = "") -> str:
    """A name from a model file, safe on a terminal: control characters (but those in `keep`)
    become escapes."""
    return _ESCAPED.sub(lambda m: m.group() if m.group() in keep else {
        "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def _read_quietly(path: str) -> str | None:
    """The model text to quote, or None for a binary file (.onnx: its "line" is a node index)."""
    if str(path).lower().endswith((".onnx", ".caffemodel")):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(8 << 20)
    except OSError:
        return None
    if b"\x00" in data[:4096]:
        return None
    return data.decode("utf-8", "replace")


def did_you_mean(word: str, choices) -> str:
    """' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        lowered = {str(c).lower(): str(c) for c in choices}
        if str(word).lower() in lowered:
            close = [lowered[str(word).lower()]]
    return f' (did you mean "{close[0]}"?)' if close else ""
