"""A notebook cell's recorded output text as a reader should see it: every progress bar once, at its final state.

A kernel records what a cell writes to ``stdout`` and ``stderr`` as chunks, in the order they arrive. tqdm draws on
``stderr``, and its text is meant for a terminal, not for reading back:

* every update is a carriage return and the bar's new state, padded with spaces over the previous one (``\\r`` then
  ``name:  40%|####      | 4/10 [...]``), so one bar leaves thousands of states in the record;
* a bar nested inside another moves down a line, draws, and moves back up (``\\n``, ``\\r`` + text, ``ESC[A``);
* a bar closed with ``leave=False`` blanks its line with spaces; one closed with ``leave=True`` is drawn a last time at
  the cursor (over its parent's line) and ends the line, so its parent goes on one line lower;
* a warning or a ``print`` may land in the middle: on ``stderr`` glued to the bar the cursor sits after, on ``stdout``
  in a chunk of its own, not always in the order it was written (the two streams are flushed separately).

:func:`replay` plays one run of chunks on a small model of a terminal: ``stderr`` moves a cursor over rows and
overwrites them; a printed line (all of ``stdout``, and ``stderr`` text that is not a redraw but would land on a bar's
row) is put above the bar being drawn, as ``tqdm.write`` does. Rows a bar blanked are dropped. Lines that only tell
about the kernel's own machinery (:data:`KERNEL_NOISE`) are dropped too. :func:`last_bar_states` then keeps one line
per bar, its last, which also reduces the one-line-per-interval reports of :class:`saetrack.echo.OutputEcho`
(``prefix | name:  40%|...``). :func:`as_blocks` groups the lines back into stream texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BAR_LINE",
    "KERNEL_NOISE",
    "as_blocks",
    "bar_description",
    "last_bar_states",
    "replay",
]

#: Markers of lines that say nothing about the run, only about the kernel it ran in, dropped from renders. The
#: libraries the package imports (transformers, datasets, sae_lens, transformer_lens) import ``tqdm.auto``; in a
#: kernel without ipywidgets it warns that it falls back to text bars (the bars the renders show) and quotes the line
#: of tqdm that imported it. Nothing a reader of the run could act on.
KERNEL_NOISE = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm as notebook_tqdm")

#: A tqdm bar's line: ``description: NN%|bar| done/total [times...]`` (sizes may carry a unit prefix: ``3.6k/50.2k``).
BAR_LINE = re.compile(
    r"^(?P<desc>.*?):\s*\d{1,3}%\|[^|]*\|\s*(?P<done>[\d.]+[a-zA-Z]?)/(?P<total>[\d.]+[a-zA-Z]?)\s*(\[|$)"
)

# What stream text is made of: line ends, carriage returns, terminal escape sequences, and text.
_TOKENS = re.compile(r"(\r\n|\r|\n|\x1b\[[0-9;?]*[A-Za-z])")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def bar_description(line: str) -> str | None:
    """The description of the tqdm bar ``line`` shows (everything before ``: NN%|``), or ``None`` for other text."""
    match = BAR_LINE.match(line)
    return match.group("desc") if match else None


def _finished(line: str) -> bool:
    """Whether ``line`` is a tqdm bar drawn complete (``n/n``)."""
    match = BAR_LINE.match(line)
    return bool(match) and match.group("done") == match.group("total")


@dataclass
class _Row:
    """One line of the modelled terminal: its stream, its characters, and what was written to it."""

    stream: str
    chars: list[str] = field(default_factory=list)
    drawn: bool = False  # written right after a carriage return: a progress bar's line
    had_text: bool = False  # ever held visible text (a row blanked afterwards is a closed bar's)

    def text(self) -> str:
        """The row as the terminal shows it at the end."""
        return "".join(self.chars).rstrip()

    def write(self, col: int, text: str) -> None:
        """Overwrite the row from column ``col`` with ``text``."""
        if len(self.chars) < col:
            self.chars.extend(" " * (col - len(self.chars)))
        self.chars[col : col + len(text)] = list(text)
        self.had_text = self.had_text or bool(text.strip())


class _Terminal:
    """The rows one run of a cell's chunks leaves, ``stderr`` drawing with a cursor, printed lines put above it."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.row = 0
        self.col = 0
        self.after_cr = False
        self.printed: dict[str, str | None] = {"stdout": "", "stderr": None}  # a printed line being built
        self.ended_bar = False  # a printed line ended a finished bar's row: its own line end is still to come

    def print_line(self, stream: str, line: str) -> None:
        """A whole printed line: above the bar being drawn (at the cursor's row), which moves down one row; below a
        bar drawn complete (``n/n``), whose line end is still to come (the two streams are flushed apart)."""
        if self.col > 0 and self.row < len(self.rows) and _finished(self.rows[self.row].text()):
            self.row, self.col, self.ended_bar = self.row + 1, 0, True
        row = _Row(stream)
        for piece in _ESCAPES.sub("", line).split("\r"):  # a bar printed to stdout: its states overwrite each other
            row.write(0, piece)
        self.rows.insert(min(self.row, len(self.rows)), row)
        self.row += 1

    def feed_printed(self, stream: str, text: str) -> None:
        """Text of a stream that only prints (``stdout``): whole lines go above the bar being drawn."""
        pieces = ((self.printed.get(stream) or "") + text.replace("\r\n", "\n")).split("\n")
        for line in pieces[:-1]:
            self.print_line(stream, line)
        self.printed[stream] = pieces[-1]

    def feed_drawn(self, text: str) -> None:
        """Text of the stream tqdm draws on (``stderr``), token by token."""
        for token in _TOKENS.split(text):
            if not token:
                continue
            if self.ended_bar:
                self.ended_bar = False
                if token in ("\n", "\r\n"):  # the finished bar's own line end: its row is ended already
                    continue
            if self.printed["stderr"] is not None:  # a printed line that landed on a bar's row
                if token in ("\n", "\r\n") and self.printed["stderr"]:
                    self.print_line("stderr", self.printed["stderr"])
                    self.printed["stderr"] = ""  # more text goes on printing; anything else is the bars' again
                    continue
                if not _TOKENS.fullmatch(token):
                    self.printed["stderr"] += token
                    continue
                if self.printed["stderr"]:
                    self.print_line("stderr", self.printed["stderr"])
                self.printed["stderr"] = None
            self._control(token) if _TOKENS.fullmatch(token) else self._text(token)

    def _control(self, token: str) -> None:
        if token in ("\n", "\r\n"):
            if self.row >= len(self.rows):  # a line end on a new row: an empty printed line
                self.rows.append(_Row("stderr"))
            self.row, self.col = self.row + 1, 0
        elif token == "\r":
            self.col = 0
        elif token[-1] in "AB":  # cursor up or down (nested bars); other escape sequences show nothing
            count = int(token[2:-1]) if token[2:-1].isdigit() else 1
            self.row = max(0, self.row - count) if token[-1] == "A" else self.row + count
        self.after_cr = token == "\r"

    def _text(self, token: str) -> None:
        on_bar = self.row < len(self.rows) and self.rows[self.row].drawn
        if not self.after_cr and on_bar and token.strip():  # not a redraw, but it would land on a bar's row
            self.printed["stderr"] = token
            return
        while len(self.rows) <= self.row:
            self.rows.append(_Row("stderr"))
        row = self.rows[self.row]
        if self.after_cr:  # a redraw is a whole line: no end of a longer line drawn there before (another bar's)
            del row.chars[len(token) :]
        row.write(self.col, token)
        row.drawn = row.drawn or self.after_cr
        self.col += len(token)
        self.after_cr = False

    def lines(self) -> list[tuple[str, str]]:
        """The run's lines, ``(stream, text)``: rows a bar blanked and kernel chatter left out."""
        for stream, rest in list(self.printed.items()):
            if rest:
                self.print_line(stream, rest)
            self.printed[stream] = None if stream == "stderr" else ""
        kept = []
        for row in self.rows:
            text = row.text()
            if (row.had_text and not text) or any(marker in text for marker in KERNEL_NOISE):
                continue
            kept.append((row.stream, text))
        return kept


def replay(chunks: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The lines ``(stream, text)`` a terminal would show at the end of ``chunks`` (``(stream, text)`` in arrival
    order): each bar at the state it was left in, bars closed with ``leave=False`` gone, printed lines kept in order
    (above a bar drawn at the time), kernel chatter (:data:`KERNEL_NOISE`) dropped."""
    terminal = _Terminal()
    for stream, text in chunks:
        if stream == "stderr":
            terminal.feed_drawn(text)
        else:
            terminal.feed_printed(stream, text)
    return terminal.lines()


def last_bar_states(lines: Sequence[tuple[str, str]]) -> list[bool]:
    """Which of ``lines`` to keep so that every bar (a stream and a :func:`bar_description`) shows once, at its last
    line; every other line is kept."""
    bars = [(stream, bar_description(text)) for stream, text in lines]
    last = {bar: index for index, bar in enumerate(bars) if bar[1] is not None}
    return [bar[1] is None or last[bar] == index for index, bar in enumerate(bars)]


def as_blocks(lines: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``lines`` as stream texts ``(stream, text)``: consecutive lines of one stream joined, each ending its line."""
    blocks: list[tuple[str, str]] = []
    for stream, text in lines:
        if blocks and blocks[-1][0] == stream:
            blocks[-1] = (stream, blocks[-1][1] + text + "\n")
        else:
            blocks.append((stream, text + "\n"))
    return blocks
