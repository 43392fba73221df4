"""Echoing a running notebook's output: bars redrawn in place on a terminal, a few whole lines in a file."""

from __future__ import annotations

import io

from saetrack.echo import OutputEcho


def test_live_echo_redraws_bars_in_place_and_prints_below_them() -> None:
    out = io.StringIO()
    echo = OutputEcho(out, "p:s", live=True)
    echo.stderr.write("\rbar:   0%|  | 0/2")
    echo.stderr.write("\rbar:  50%|# | 1/2")
    echo.stdout.write("a printed line\n")
    echo.stderr.write("\n")  # the bar's own line end, arriving late on its stream
    echo.stderr.write("\rbar: 100%|##| 2/2")
    echo.stderr.write("x.py:1: UserWarning: careful\n")  # not a redraw: kept whole, on its own line
    echo.finish()
    assert out.getvalue() == (
        "\r  p:s | bar:   0%|  | 0/2\r  p:s | bar:  50%|# | 1/2\n"
        "  p:s | a printed line\n"
        "\r  p:s | bar: 100%|##| 2/2\n"
        "  p:s | x.py:1: UserWarning: careful\n"
        "\r\x1b[K"
    )
    assert set(echo.kernel_env()) == {"TQDM_NCOLS", "TQDM_NROWS"}


def test_line_echo_keeps_prints_and_drops_the_moves_of_nested_bars() -> None:
    out = io.StringIO()
    echo = OutputEcho(out, "p:s", live=False, progress_every=3600)
    echo.stderr.write("\router:   0%| | 0/2")
    echo.stderr.write("\n")
    echo.stderr.write("\rinner:   0%| | 0/9")
    echo.stderr.write("\x1b[A")
    echo.stderr.write("\n")
    echo.stderr.write("\r             ")
    echo.stderr.write("\x1b[A")
    echo.stderr.write("\router:  50%| | 1/2")
    echo.stderr.write("x.py:1: UserWarning: careful\n")
    echo.stdout.write("step 1 done")
    echo.stdout.write("\n\nstep 2 done\n")
    echo.stdout.write("no newline at the end")
    echo.finish()
    assert out.getvalue().splitlines() == [
        "  p:s | outer:   0%| | 0/2",
        "  p:s | x.py:1: UserWarning: careful",
        "  p:s | step 1 done",
        "  p:s |",
        "  p:s | step 2 done",
        "  p:s | no newline at the end",
    ]
    assert echo.kernel_env() == {}
