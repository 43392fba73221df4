"""Streaming a running notebook's output to the terminal.

Printed lines are passed on as they come; progress bars are redrawn in place on a terminal and throttled to one
line every :data:`PROGRESS_EVERY_S` seconds in a file or pipe.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from typing import TextIO

from saetrack.progress_text import KERNEL_NOISE

__all__ = [
    "PROGRESS_EVERY_S",
    "OutputEcho",
]

#: When the echo goes to a file or a pipe (not a terminal), a progress bar shows one line at most this often.
PROGRESS_EVERY_S = 10.0


# What a kernel's stream text is split into: line ends, carriage returns, and terminal escape sequences.
_TOKENS = re.compile(r"(\r\n|\r|\n|\x1b\[[0-9;?]*[A-Za-z])")


class _Sink:
    """One of the kernel's output streams (``stdout`` or ``stderr``) as papermill writes it: ``write`` + ``flush``."""

    def __init__(self, echo: OutputEcho, name: str) -> None:
        self._echo = echo
        self._name = name

    def write(self, text: str) -> int:
        """Pass a chunk of the stream to the echo."""
        self._echo.feed(self._name, text)
        return len(text)

    def flush(self) -> None:
        """Flush the echo's target."""
        self._echo.flush()


class OutputEcho:
    """Streams a running notebook's ``stdout``/``stderr`` to ``target``, every line prefixed with ``  <label> | ``.

    A kernel's tqdm bars arrive as stderr text redrawn with carriage returns. On a terminal (``live``, the default
    when ``target`` is a TTY) they are redrawn in place, cut to the terminal's width, and a printed line first
    clears a bar being drawn (as ``tqdm.write`` does). Elsewhere (a log file, a pipe, a notebook cell) lines are
    written whole, and a bar shows at most one line per ``progress_every`` seconds: its state at that moment, with
    its time left. Terminal escape sequences are dropped there.
    """

    def __init__(
        self,
        target: TextIO,
        label: str,
        *,
        live: bool | None = None,
        progress_every: float = PROGRESS_EVERY_S,
    ) -> None:
        self.target = target
        self.prefix = f"  {label} | " if label else "  "
        if live is None:
            isatty = getattr(target, "isatty", None)
            live = bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"
        self.live = live
        self.progress_every = progress_every
        self.stdout = _Sink(self, "stdout")
        self.stderr = _Sink(self, "stderr")
        # line mode: per stream, the text of the line being built and whether a carriage return redrew it
        self._line = {"stdout": "", "stderr": ""}
        self._redrawn = {"stdout": False, "stderr": False}
        self._last_progress = -math.inf
        self._last_progress_text = ""
        # live mode: the cursor's column, whether its row is a bar being redrawn (and blank), and whether a printed
        # line just cut in below a bar (whose own line end then is not written again)
        self._col = 0
        self._bar_row = False
        self._row_blank = True
        self._bar_broken = False

    # -- shared ---------------------------------------------------------------------------------------------

    def size(self) -> tuple[int, int]:
        """Columns and lines of the target terminal (100 x 24 where it has none, or a size of 0)."""
        try:
            columns, lines = os.get_terminal_size(self.target.fileno())
        except (AttributeError, OSError, ValueError):
            columns, lines = 0, 0
        fallback = shutil.get_terminal_size((100, 24))
        return (columns if columns > 0 else fallback.columns), (lines if lines > 0 else fallback.lines)

    def kernel_env(self) -> dict[str, str]:
        """Environment for the kernel: on a terminal, the size its tqdm bars may use (``TQDM_NCOLS``/``TQDM_NROWS``).

        A kernel's tqdm cannot see our terminal (or sees all of it, not the room left beside the prefix, when the
        kernel inherits it; an unsized pseudo-terminal even makes it draw nothing); a bar wider than the terminal
        cannot be redrawn in place.
        """
        if not self.live:
            return {}
        columns, lines = self.size()
        return {"TQDM_NCOLS": str(max(30, columns - 1 - len(self.prefix))), "TQDM_NROWS": str(max(lines, 4))}

    def feed(self, stream: str, text: str) -> None:
        """Take a chunk of the kernel's ``stream`` ("stdout" or "stderr") as it arrives."""
        if any(marker in text for marker in KERNEL_NOISE):
            text = "".join(line for line in text.splitlines(keepends=True) if not any(m in line for m in KERNEL_NOISE))
        if not text:
            return
        if self.live:
            self._feed_live(stream, text)
        else:
            self._feed_lines(stream, text)

    def flush(self) -> None:
        """Flush the target stream."""
        flush = getattr(self.target, "flush", None)
        if flush is not None:
            flush()

    def finish(self) -> None:
        """End of the notebook: write out a printed line left without its newline, leave the cursor at a new line."""
        if self.live:
            if self._col > 0 and not self._row_blank:
                self.target.write("\n")
            else:
                self.target.write("\r\x1b[K")
            self._col, self._bar_row, self._row_blank, self._bar_broken = 0, False, True, False
        else:
            for stream in ("stdout", "stderr"):
                if not self._redrawn[stream] and self._line[stream].strip():
                    self._emit(self._line[stream])
                self._line[stream], self._redrawn[stream] = "", False
        self.flush()

    # -- whole lines (files, pipes) ----------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        self.target.write(f"{self.prefix}{line}".rstrip() + "\n")

    def _consider_progress(self, stream: str) -> None:
        """The current state of a bar being redrawn: written if ``progress_every`` passed since the last one."""
        state = self._line[stream].strip()
        now = time.monotonic()
        if state and state != self._last_progress_text and now - self._last_progress >= self.progress_every:
            self._emit(self._line[stream].rstrip())
            self._last_progress, self._last_progress_text = now, state

    def _feed_lines(self, stream: str, text: str) -> None:
        tokens = [token for token in _TOKENS.split(text) if token]
        if self._redrawn[stream] and not _TOKENS.fullmatch(tokens[0]):
            # text that is not a redraw (a warning, say) goes on a line of its own, not into the bar's state
            self._consider_progress(stream)
            self._line[stream], self._redrawn[stream] = "", False
        for token in tokens:
            if token.startswith("\x1b"):
                continue
            if token in ("\n", "\r\n"):
                if self._redrawn[stream]:
                    self._consider_progress(stream)
                elif stream == "stdout" or self._line[stream].strip():  # nested bars move down with bare newlines
                    self._emit(self._line[stream])
                self._line[stream], self._redrawn[stream] = "", False
            elif token == "\r":
                if self._redrawn[stream]:
                    self._consider_progress(stream)
                elif self._line[stream].strip():  # a printed line ending in a bare carriage return
                    self._emit(self._line[stream])
                self._line[stream], self._redrawn[stream] = "", True
            else:
                self._line[stream] += token
        if self._redrawn[stream]:
            self._consider_progress(stream)
        self.flush()

    # -- live (a terminal) -------------------------------------------------------------------------------------

    def _feed_live(self, stream: str, text: str) -> None:
        out = self.target
        width = self.size()[0]
        tokens = [token for token in _TOKENS.split(text) if token]
        if self._bar_row and self._col > 0 and (stream == "stdout" or not _TOKENS.fullmatch(tokens[0])):
            # a printed line (or a warning) goes below the bar's current state; the bar is redrawn below it
            out.write("\r\x1b[K" if self._row_blank else "\n")
            self._col, self._bar_row, self._row_blank = 0, False, True
            self._bar_broken = stream == "stdout"
        for token in tokens:
            if stream == "stderr" and self._bar_broken:
                self._bar_broken = False
                if token in ("\n", "\r\n"):  # the bar's own line end, already written before the printed line
                    continue
            if token in ("\n", "\r\n"):
                out.write("\n")
                self._col, self._bar_row, self._row_blank = 0, False, True
            elif token == "\r":
                out.write("\r")
                self._col, self._bar_row, self._row_blank = 0, True, True
            elif token.startswith("\x1b"):
                out.write(token)  # cursor movement of nested bars
            else:
                if self._col == 0:
                    out.write(self.prefix)
                    self._col = len(self.prefix)
                if self._bar_row:  # a bar must fit on its row, or redrawing it in place fails
                    token = token[: max(0, width - 1 - self._col)]
                out.write(token)
                self._col += len(token)
                self._row_blank = self._row_blank and not token.strip()
        self.flush()
