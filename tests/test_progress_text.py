"""Recorded stream text reduced to what a reader needs: one line per progress bar (its last state), prints kept."""

from __future__ import annotations

import io

from tqdm import tqdm

from saetrack.progress_text import KERNEL_NOISE, as_blocks, bar_description, last_bar_states, replay


def _reduced(chunks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    lines = replay(chunks)
    return [line for line, keep in zip(lines, last_bar_states(lines), strict=True) if keep]


def test_carriage_return_updates_leave_the_last_state() -> None:
    text = "\rtrain:   0%|   | 0/10 [00:00<?, ?it/s]\rtrain:  50%|#  | 5/10 [00:01]\rtrain: 100%|###| 10/10 [00:02]\n"
    assert replay([("stderr", text)]) == [("stderr", "train: 100%|###| 10/10 [00:02]")]


def test_a_redraw_replaces_a_longer_line_and_a_blanked_bar_disappears() -> None:
    text = "\rlong description here: 1%|| 1/100 [00:00, loss=1.234]\rshort: 100%|#| 2/2 [00:00]\n"
    assert replay([("stderr", text)]) == [("stderr", "short: 100%|#| 2/2 [00:00]")]
    cleared = "\rgone:  50%|#  | 1/2 [00:00]\r                            \r"  # tqdm's leave=False close
    assert replay([("stderr", cleared), ("stdout", "after\n")]) == [("stdout", "after")]


def test_real_nested_tqdm_bars_with_leave_false_become_one_line() -> None:
    stream = io.StringIO()
    with tqdm(total=3, desc="outer", file=stream, mininterval=0, ncols=70) as outer:
        for i in range(3):
            for _ in tqdm(range(4), desc=f"inner {i}", file=stream, leave=False, mininterval=0, ncols=70):
                pass
            outer.update()
    assert "\x1b[A" in stream.getvalue() and stream.getvalue().count("\r") > 15
    lines = replay([("stderr", stream.getvalue())])
    assert len(lines) == 1 and lines[0][1].startswith("outer: 100%|") and "3/3" in lines[0][1], lines


def test_a_nested_bar_left_behind_keeps_one_line_and_its_parent_one_more() -> None:
    stream = io.StringIO()
    with tqdm(total=2, desc="caching checkpoints", file=stream, mininterval=0, ncols=80) as outer:
        for _ in range(2):
            for _ in tqdm(range(5), desc="loading", file=stream, mininterval=0, ncols=60):  # leave=True
                pass
            outer.update()
    lines = _reduced([("stderr", stream.getvalue())])
    descriptions = [bar_description(text) for _, text in lines]
    assert descriptions == ["loading", "caching checkpoints"], lines
    assert lines[0][1].rstrip().endswith("]") and "5/5" in lines[0][1] and "2/2" in lines[1][1]


def test_newline_terminated_updates_of_two_interleaved_bars_keep_each_bars_last_line() -> None:
    # OutputEcho's reports in a file: one whole line per bar and interval, two runs side by side
    lines = [
        "    (a) [a:cache] running 01",
        "    (a) a:cache | train a suite:  18%|#  | 350/2000 [00:40<03:05,  8.87it/s]",
        "    (b) b:cache | train b suite:  12%|#  | 233/2000 [00:40<05:06,  5.76it/s]",
        "    (a) a:cache | train a suite:  33%|## | 658/2000 [01:10<02:04, 10.76it/s]",
        "    (b) b:cache | printed between",
        "    (b) b:cache | train b suite:  22%|## | 447/2000 [01:10<03:10,  8.16it/s]",
        "    (a) [a:cache] done in 274.3 s",
    ]
    kept = [text for _, text in _reduced([("stdout", "\n".join(lines) + "\n")])]
    assert kept == [lines[0], lines[3], lines[4], lines[5], lines[6]]


def test_printed_lines_are_kept_in_order_above_the_bar_they_interrupt() -> None:
    chunks = [
        ("stdout", "step 0  loss 8.3\n"),
        ("stderr", "\rtrain:   0%|          | 0/3 [00:00<?, ?it/s]"),
        ("stderr", "\rtrain:  33%|###       | 1/3 [00:01<00:02]"),
        ("stdout", "step 1  loss 8.1\n"),
        ("stderr", "\r                                          \r"),  # tqdm.write clears the bar ...
        ("stderr", "\rtrain:  67%|######    | 2/3 [00:02<00:01]"),  # ... and draws it again
        ("stdout", "\n"),  # an empty printed line stays
        ("stdout", "step 2  loss "),
        ("stdout", "7.9\n"),
        ("stderr", "\rtrain: 100%|##########| 3/3 [00:03<00:00]\n"),
        ("stdout", "final loss 7.9\n"),
    ]
    assert _reduced(chunks) == [
        ("stdout", "step 0  loss 8.3"),
        ("stdout", "step 1  loss 8.1"),
        ("stdout", ""),
        ("stdout", "step 2  loss 7.9"),
        ("stderr", "train: 100%|##########| 3/3 [00:03<00:00]"),
        ("stdout", "final loss 7.9"),
    ]


def test_a_warning_written_onto_a_bars_line_gets_lines_of_its_own() -> None:
    text = (
        "\router:   0%|          | 0/2 [00:00<?, ?it/s]\n\rinner:   0%|          | 0/8 [00:00<?, ?it/s]\x1b[A"
        "./weights.py:92: UserWarning: not writable\n  xt = torch.as_tensor(x)\n"
        "\n\rinner: 100%|##########| 8/8 [00:01<00:00]\x1b[A\n\r                                   \x1b[A"
        "\router:  50%|#####     | 1/2 [00:01<00:01]\router: 100%|##########| 2/2 [00:02<00:00]\n"
    )
    assert replay([("stderr", text)]) == [
        ("stderr", "./weights.py:92: UserWarning: not writable"),
        ("stderr", "  xt = torch.as_tensor(x)"),
        ("stderr", "outer: 100%|##########| 2/2 [00:02<00:00]"),
    ]


def test_kernel_chatter_is_dropped_and_other_warnings_kept() -> None:
    noise = (
        f"/env/lib/python3.11/site-packages/tqdm/auto.py:21: {KERNEL_NOISE[0]}. Please update\n  {KERNEL_NOISE[1]}\n"
    )
    real = "<this cell>:6: UserWarning: something the reader can fix\n"
    assert replay([("stderr", noise + real)]) == [("stderr", real.rstrip("\n"))]


def test_bar_descriptions_and_blocks() -> None:
    assert bar_description("link 1/28 (step 0): 100%|##| 1.00M/1.00M [00:26<00:00, 38.3ktok/s]") == "link 1/28 (step 0)"
    assert bar_description("  a | b:  5%|          | 0.00/50.2k [00:00<?, ?tok/s]") == "  a | b"
    assert bar_description("step 0: explained variance 0.896, dead 0.0%") is None
    assert bar_description("ratio: 50%|of the features| are alive") is None
    lines = [("stdout", "a"), ("stdout", "b"), ("stderr", "c"), ("stdout", "d")]
    assert as_blocks(lines) == [("stdout", "a\nb\n"), ("stderr", "c\n"), ("stdout", "d\n")]


def test_a_line_printed_after_a_bar_finished_but_before_its_line_end_stays_below_it() -> None:
    chunks = [
        ("stderr", "\rlink 1/2: 100%|##########| 5/5 [00:01<00:00]\n"),
        ("stderr", "\rlink 2/2:  60%|######    | 3/5 [00:00<00:00]"),
        ("stderr", "\rlink 2/2: 100%|##########| 5/5 [00:01<00:00]  "),
        ("stdout", "noise floor: 2 links retrained in 2.0 s\n"),
        ("stderr", "\n"),  # the bar's own line end, flushed after the print
        ("stdout", "next\n"),
        ("stderr", "\rnew:   0%|          | 0/2 [00:00<?, ?it/s]\rnew: 100%|##########| 2/2 [00:00<00:00]\n"),
    ]
    assert [text for _, text in replay(chunks)] == [
        "link 1/2: 100%|##########| 5/5 [00:01<00:00]",
        "link 2/2: 100%|##########| 5/5 [00:01<00:00]",
        "noise floor: 2 links retrained in 2.0 s",
        "next",
        "new: 100%|##########| 2/2 [00:00<00:00]",
    ]
