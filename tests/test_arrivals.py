"""arrivals.py against the kernel's own inotify: which files were renamed in whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidd.arrivals import Arrivals


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    elsewhere.mkdir()
    return inbox, elsewhere


def renamed_in(elsewhere: Path, inbox: Path, name: str) -> Path:
    staged = elsewhere / name
    staged.write_bytes(b"x" * 1000)
    return staged.rename(inbox / name)


def test_a_rename_in_is_whole_and_a_file_written_in_place_is_not(folders) -> None:
    inbox, elsewhere = folders
    arrivals = Arrivals(inbox)
    assert arrivals.open()
    try:
        moved = renamed_in(elsewhere, inbox, "moved.avi")
        written = inbox / "written.avi"
        written.write_bytes(b"x" * 1000)  # created, written and closed in one go
        arrivals.catch_up()
        assert arrivals.whole(moved)
        assert not arrivals.whole(written)
        assert not arrivals.whole(elsewhere / "moved.avi")  # another folder

        with moved.open("ab") as f:  # written to after it came: no longer whole
            f.write(b"more")
        arrivals.catch_up()
        assert not arrivals.whole(moved)

        again = renamed_in(elsewhere, inbox, "again.avi")
        arrivals.catch_up()
        assert arrivals.whole(again)
        again.rename(elsewhere / "again.avi")  # taken away (as the intake claims it)
        (inbox / "again.avi").write_bytes(b"new")  # and a new file of that name written
        arrivals.catch_up()
        assert not arrivals.whole(inbox / "again.avi")
    finally:
        arrivals.close()


def test_it_remembers_a_bounded_number_of_names(folders) -> None:
    inbox, elsewhere = folders
    arrivals = Arrivals(inbox, max_names=2)
    assert arrivals.open()
    try:
        paths = [renamed_in(elsewhere, inbox, f"{i}.avi") for i in range(3)]
        arrivals.catch_up()
        assert [arrivals.whole(p) for p in paths] == [False, True, True]  # oldest forgotten
    finally:
        arrivals.close()


def test_closed_or_unopenable_it_says_no(folders, tmp_path: Path) -> None:
    inbox, elsewhere = folders
    arrivals = Arrivals(inbox)
    assert arrivals.open()
    moved = renamed_in(elsewhere, inbox, "moved.avi")
    arrivals.catch_up()
    assert arrivals.whole(moved)
    arrivals.close()
    assert not arrivals.whole(moved)
    missing = Arrivals(tmp_path / "no-such-folder")
    assert not missing.open()
    missing.catch_up()  # harmless when not open
    assert not missing.whole(tmp_path / "no-such-folder" / "x.avi")
