"""The progress board: on a terminal one line per file, redrawn in place; elsewhere one line
per milestone and no cursor movement; names from outside can't reach the terminal raw."""

from __future__ import annotations

import io

from vidd import terminal


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_per_file_redrawn_in_place():
    out = Tty()
    board = terminal.Board(out)
    a, b = board.line("a.avi"), board.line("b\x1b[2Jbad.avi")
    a.upload(0, 100)
    b.upload(100, 100)  # the end of an upload always draws
    a.convert({"id": "x", "status": "running", "progress": 0.5, "fps": 42.0, "eta_s": 65})
    b.ended("rejected", "not a video")
    board.close()
    text = out.getvalue()
    assert "\x1b[2J" not in text  # the name's escape is shown, not obeyed
    assert "b\\x1b[2Jbad.avi" in text
    assert text.count("\x1b[2A") >= 2  # back up over the two lines to redraw them
    last = text.rsplit("\x1b[2A", 1)[1]
    assert "convert" in last and "42 fps, ETA 1m05s" in last and " 50.0%" in last
    assert "rejected" in last and "not a video" in last


def test_a_pipe_gets_milestones_only():
    out = io.StringIO()
    board = terminal.Board(out)
    a = board.line("a.avi")
    a.upload(10, 100)
    a.uploaded({"id": "job1"})
    for status in ("queued", "running", "running", "done"):
        a.convert({"status": status, "progress": 0.5})
    board.close()
    assert out.getvalue() == (
        "a.avi: uploaded as job1\na.avi: queued\na.avi: running\na.avi: done\n"
    )


def test_sizes_and_durations():
    assert terminal.size(512) == "512 B" and terminal.size(5 << 30) == "5.0 GiB"
    assert terminal.duration(3725) == "1h02m05s" and terminal.duration(59) == "59s"


def test_a_result_goes_above_the_board_which_is_drawn_again_below_it():
    out = Tty()
    board = terminal.Board(out)
    board.line("a.avi").upload(100, 100)
    board.line("b.avi").upload(100, 100)
    before = len(out.getvalue())
    board.above("job1\tdone\thttp://x/watch/job1", out)  # stdout and stderr: one terminal
    after = out.getvalue()[before:]
    # up over the board, clear it, the result, then the board again from there (no "up")
    head, board_again = after.split("job1\tdone\thttp://x/watch/job1\n")
    assert head == "\x1b[2A\r\x1b[J"
    assert "\x1b[" not in board_again.replace("\x1b[K", "")
    assert board_again.count("\n") == 2 and "a.avi" in board_again and "b.avi" in board_again
    board.changed(force=True)  # the next redraw goes up over the new board only
    assert out.getvalue().endswith(board_again) and "\x1b[2A" in out.getvalue()[-400:]
