"""Publishing results under their own names: the name cleaning and numbering (names.py),
placing a file on real filesystems (a hard link, a copy onto a tmpfs), and the Publisher
against a real SQLite store."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testkit.jobs import make_job
from testkit.tmpfs import tiny_disk
from vidd import names
from vidd.job import MediaInfo
from vidd.layout import Layout
from vidd.publish import Publisher, place
from vidd.store import Store

# --- names --------------------------------------------------------------------------


def assert_safe(name: str) -> None:
    assert name and name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert len(name.encode("utf-8")) <= names.MAX_NAME_BYTES
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs") for c in name)


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../x", "_x"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("a\x00b.mov", "ab.mov"),
        ("\u202egpj.exe", "gpj.exe"),  # the RTL override is dropped, not shown
        ("...", "untitled"),
        (".", "untitled"),
        ("..", "untitled"),
        ("", "untitled"),
        (" \t\n", "untitled"),
        (".hidden.mov", "hidden.mov"),
        ("a/b\\c:d.mov", "a_b_c_d.mov"),
        ("holiday.mov", "holiday.mov"),
        ("zażółć gęślą.mkv", "zażółć gęślą.mkv"),
    ],
)
def test_hostile_names_become_one_safe_component(hostile: str, expected: str) -> None:
    cleaned = names.file_name(hostile)
    assert cleaned == expected
    assert_safe(cleaned)


def test_a_very_long_name_is_cut_in_bytes_and_keeps_its_extension() -> None:
    for char in ("a", "ż", "😀"):
        cleaned = names.file_name(char * 1000 + ".mov")
        assert cleaned.endswith(".mov")
        assert len(cleaned.encode("utf-8")) <= names.MAX_NAME_BYTES
        assert cleaned[:-4] == char * len(cleaned[:-4])  # cut between characters, not inside
        # The bound leaves room for the numbering within the filesystem's 255 bytes.
        last = names.numbered(names.result_name(char * 1000 + ".mov"), 1000)
        assert last.endswith(" (1000).mp4") and len(last.encode("utf-8")) <= 255


def test_undecodable_bytes_become_replacement_characters() -> None:
    raw = os.fsdecode(b"clip\xff\xfe.avi")
    assert names.file_name(raw) == "clip\ufffd\ufffd.avi"


@given(st.text(max_size=600))
def test_any_text_gives_a_safe_name(text: str) -> None:
    assert_safe(names.file_name(text))
    assert_safe(names.result_name(text))
    assert names.result_name(text).endswith(".mp4")


@pytest.mark.parametrize(
    ("original", "published"),
    [
        ("holiday.mov", "holiday.mp4"),
        ("holiday.MP4", "holiday.mp4"),
        ("holiday", "holiday.mp4"),
        ("my.trip.2024.mkv", "my.trip.2024.mp4"),
        (".mov", "mov.mp4"),
        ("../../x.avi", "_.._x.mp4"),
    ],
)
def test_result_names(original: str, published: str) -> None:
    assert names.result_name(original) == published


def test_numbering() -> None:
    assert names.numbered("holiday.mp4", 1) == "holiday.mp4"
    assert names.numbered("holiday.mp4", 2) == "holiday (2).mp4"
    assert names.numbered("holiday.mp4", 10) == "holiday (10).mp4"
    assert names.numbered("README", 3) == "README (3)"
    assert names.numbered("my.trip.mp4", 2) == "my.trip (2).mp4"


def test_folder_parts_never_climb() -> None:
    assert names.folder_parts("") == []
    assert names.folder_parts("sub") == ["sub"]
    assert names.folder_parts("sub/deeper") == ["sub", "deeper"]
    assert names.folder_parts("../sub/./../x") == ["sub", "x"]
    assert names.folder_parts("a\\b") == ["a", "b"]
    assert names.folder_parts("/".join(["d"] * 100)) == ["d"] * names.MAX_FOLDER_PARTS


# --- placing a file --------------------------------------------------------------------


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "videos" / "abc.mp4"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    return path


def test_a_hard_link_under_its_name_then_numbered(tmp_path: Path, video: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    first = place(video, out, ["sub"], "holiday.mp4", temp_name=".t")
    assert (first.path, first.number, first.how) == ("sub/holiday.mp4", 1, "hard link")
    assert (out / "sub" / "holiday.mp4").samefile(video)
    other = tmp_path / "videos" / "def.mp4"
    other.write_bytes(b"another result")
    second = place(other, out, ["sub"], "holiday.mp4", temp_name=".t")
    assert (second.path, second.number) == ("sub/holiday (2).mp4", 2)
    assert (out / "sub" / "holiday.mp4").samefile(video)  # the first one untouched
    assert (out / "sub" / "holiday (2).mp4").read_bytes() == b"another result"


def test_the_same_result_again_is_found_not_duplicated(tmp_path: Path, video: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.mp4").write_bytes(b"someone else's file")
    first = place(video, out, [], "holiday.mp4", temp_name=".t")
    again = place(video, out, [], "holiday.mp4", temp_name=".t", recovering=True)
    assert first.path == again.path == "holiday (2).mp4"
    assert again.how == "already there"
    assert sorted(p.name for p in out.iterdir()) == ["holiday (2).mp4", "holiday.mp4"]
    assert (out / "holiday.mp4").read_bytes() == b"someone else's file"


def test_a_symlink_in_the_output_folder_is_never_followed(tmp_path: Path, video: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(OSError):
        place(video, out, ["sub"], "holiday.mp4", temp_name=".t")
    assert list(elsewhere.iterdir()) == []
    (out / "x.mp4").symlink_to(elsewhere / "target.mp4")  # a dangling link is a taken name
    placed = place(video, out, [], "x.mp4", temp_name=".t")
    assert placed.path == "x (2).mp4"
    assert list(elsewhere.iterdir()) == []


def test_another_filesystem_gets_a_durable_copy(tmp_path: Path, video: Path) -> None:
    with tiny_disk(tmp_path / "other", "1m") as out:
        (out / "a" / "b").mkdir(parents=True)
        (out / "a" / "b" / ".t").write_bytes(b"a copy a crash cut short")
        placed = place(video, out, ["a", "b"], "holiday.mp4", temp_name=".t")
        assert (placed.path, placed.how) == ("a/b/holiday.mp4", "copy")
        copy = out / "a" / "b" / "holiday.mp4"
        assert copy.read_bytes() == video.read_bytes()
        assert not copy.samefile(video)
        assert not (out / "a" / "b" / ".t").exists()
        # A crash after the copy got its name, before the store heard: found by its bytes.
        again = place(video, out, ["a", "b"], "holiday.mp4", temp_name=".t", recovering=True)
        assert (again.path, again.how) == ("a/b/holiday.mp4", "already there")
        assert sorted(p.name for p in (out / "a" / "b").iterdir()) == ["holiday.mp4"]


def test_a_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 << 20))
    with tiny_disk(tmp_path / "small", "1m") as out:
        with pytest.raises(OSError):
            place(big, out, [], "big.mp4", temp_name=".t")
        assert list(out.iterdir()) == []


# --- the Publisher with a real store ------------------------------------------------------


@pytest.fixture
async def env(make_config, tmp_path: Path):
    cfg = make_config(storage={"output_dir": str(tmp_path / "published")})
    layout = Layout(cfg.storage)
    layout.make_dirs()
    async with Store(cfg.storage.db_path) as store:
        yield cfg, store, layout


async def done_job(store: Store, layout: Layout, name: str, folder: str = "") -> str:
    """A done inbox job with its result in videos/, marked for publishing."""
    job = await store.add(make_job(name=name, origin="inbox", folder=folder))
    layout.video(job.id).write_bytes(f"result of {job.id}".encode())
    claimed = await store.claim_next()
    assert claimed is not None and claimed.id == job.id
    output = MediaInfo(size=10, duration=2.0)
    await store.finish(job.id, output, poster=False, log_tail="", publish=True)
    return job.id


async def test_pending_results_are_published_with_notes(env) -> None:
    cfg, store, layout = env
    first = await done_job(store, layout, "holiday.mov", "trip")
    second = await done_job(store, layout, "holiday.avi", "trip")
    assert {j.id for j in await store.publish_pending()} == {first, second}
    publisher = Publisher(cfg, store, layout)
    assert await publisher.recover() == 2
    await publisher.stop(timeout_s=10)
    one, two = await store.get(first), await store.get(second)
    assert one is not None and two is not None
    assert one.published_as == "trip/holiday.mp4" and one.publish_note is None
    assert two.published_as == "trip/holiday (2).mp4"
    assert two.publish_note == "Saved as “holiday (2).mp4” because “holiday.mp4” was already there."
    assert await store.publish_pending() == []
    root = cfg.storage.output_dir
    assert (root / "trip" / "holiday.mp4").read_bytes() == f"result of {first}".encode()
    assert (root / "trip" / "holiday (2).mp4").read_bytes() == f"result of {second}".encode()
    assert one.to_json()["published_as"] == "trip/holiday.mp4"
    assert one.to_json()["folder"] == "trip"
    assert publisher.published == 2 and publisher.failed == 0


async def test_a_failure_is_a_note_not_a_crash(env) -> None:
    cfg, store, layout = env
    job_id = await done_job(store, layout, "holiday.mov")
    cfg.storage.output_dir.rmdir()
    cfg.storage.output_dir.write_text("a file where the folder should be")
    publisher = Publisher(cfg, store, layout)
    publisher.later(job_id)
    await publisher.stop(timeout_s=10)
    job = await store.get(job_id)
    assert job is not None and job.published_as is None
    assert job.publish_note is not None
    assert job.publish_note.startswith("The result could not be saved to the output folder")
    assert publisher.failed == 1
    assert await store.publish_pending() == []


async def test_a_publication_cut_off_by_a_stop_is_finished_at_the_next_start(env) -> None:
    cfg, store, layout = env
    job_id = await done_job(store, layout, "holiday.mov")
    publisher = Publisher(cfg, store, layout)
    publisher.later(job_id)
    await publisher.stop(timeout_s=0)  # vidd stops before the publication could run
    assert [j.id for j in await store.publish_pending()] == [job_id]
    assert list(cfg.storage.output_dir.iterdir()) == []
    after_restart = Publisher(cfg, store, layout)
    assert await after_restart.recover() == 1
    await after_restart.stop(timeout_s=10)
    job = await store.get(job_id)
    assert job is not None and job.published_as == "holiday.mp4"
    assert (cfg.storage.output_dir / "holiday.mp4").samefile(layout.video(job_id))
