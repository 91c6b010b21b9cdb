"""The --json block parser and Progress, on HandBrakeCLI 1.6.1's real output (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

from vidd.progress import (
    MAX_BLOCK_LINES,
    BlockParser,
    Progress,
    ProgressMeter,
    from_block,
    parse_blocks,
)

DATA = Path(__file__).parent / "data"
# `HandBrakeCLI --json -i <20 s 640x480> -o out.mp4 --format av_mp4 -e x264 -q 22 -r 15 -B 96 -O`
ENCODE = (DATA / "hb_encode_stdout.txt").read_text()
# The same with `-e x264 -b 300 -2 -T`: two passes.
TWO_PASS = (DATA / "hb_twopass_stdout.txt").read_text()


def feed_all(text: str) -> tuple[list[tuple[str, dict]], list[str]]:
    parser = BlockParser()
    blocks, plain = [], []
    for line in text.splitlines(keepends=True):
        block = parser.feed(line)
        if block is not None:
            blocks.append(block)
        elif parser.outside:
            plain.append(line.strip())
    return blocks, plain


def test_real_output_parses_into_version_progress_and_workdone():
    blocks, plain = feed_all(ENCODE)
    names = [name for name, _ in blocks]
    assert names[0] == "Version" and set(names[1:]) == {"Progress"}
    assert blocks[0][1]["VersionString"] == "1.6.1"
    states = [b["State"] for name, b in blocks if name == "Progress"]
    assert states[-1] == "WORKDONE" and "WORKING" in states
    assert blocks[-1][1]["WorkDone"]["Error"] == 0
    # Every block in the file was found, and libdvdread's chatter stayed plain text.
    assert len(blocks) == ENCODE.count(": {\n") - ENCODE.count('": {\n')
    assert any(line.startswith("libdvdread:") for line in plain)
    assert not any(line.startswith('"') for line in plain)


def test_progress_from_real_output_rises_to_one():
    blocks, _ = feed_all(ENCODE)
    meter = ProgressMeter(frames_total=20 * 15)
    seen = [meter.update(b, now=i * 0.2) for i, (_, b) in enumerate(blocks[1:])]
    values = [p.progress for p in seen if p is not None]
    assert values == sorted(values) and values[0] > 0
    assert seen[-1] == Progress("done", 1.0, None, 0.0)
    encoding = [p for p in seen if p is not None and p.phase == "encoding"]
    # HandBrake 1.6.1 said Rate ~0 and ETA 0 throughout; the meter filled both in.
    assert all(b["Working"]["Rate"] < 0.5 for _, b in blocks if b.get("State") == "WORKING")
    assert encoding[-1].fps is not None and encoding[-1].fps > 0
    assert all(p.eta_s is None or p.eta_s >= 0 for p in encoding)


def test_two_passes_make_one_overall_progress():
    blocks, _ = feed_all(TWO_PASS)
    working = [b for _, b in blocks if b.get("State") == "WORKING"]
    assert {b["Working"]["Pass"] for b in working} == {1, 2}
    overall = [from_block(b).progress for b in working]
    assert overall == sorted(overall)
    first_pass = [p for p, b in zip(overall, working, strict=True) if b["Working"]["Pass"] == 1]
    assert max(first_pass) <= 0.5 < overall[-1]


def test_output_cut_off_anywhere_yields_only_whole_blocks():
    full, _ = feed_all(ENCODE)
    lines = ENCODE.splitlines(keepends=True)
    for n in range(len(lines) + 1):
        for partial in ("", lines[n][: len(lines[n]) // 2] if n < len(lines) else ""):
            blocks, _ = feed_all("".join(lines[:n]) + partial)
            assert blocks == full[: len(blocks)]


def test_a_block_cut_off_by_the_next_one_is_dropped():
    text = (
        "Progress: {\n"
        '    "State": "WORKING",\n'
        '    "Working": {\n'
        "Progress: {\n"
        '    "State": "MUXING"\n'
        "}\n"
    )
    assert feed_all(text)[0] == [("Progress", {"State": "MUXING"})]


def test_garbage_is_survived():
    text = (
        "}\n"
        "random words: not a block\n"
        "Progress: {\n"
        "    this is not json\n"
        "}\n"
        "\x00\xff binary\n"
        "Progress: [\n"
        "***********Progress: {\n"  # log text without a newline before a header
        '    "State": "WORKDONE",\n'
        '    "WorkDone": {"Error": 0}\n'
        "}\n"
    )
    blocks, plain = feed_all(text)
    assert blocks == [("Progress", {"State": "WORKDONE", "WorkDone": {"Error": 0}})]
    assert "random words: not a block" in plain


def test_a_runaway_block_is_dropped():
    parser = BlockParser()
    parser.feed("Progress: {")
    for _ in range(MAX_BLOCK_LINES + 1):
        assert parser.feed('    "x": 1,') is None
    assert parser.feed("}") is None
    assert parser.feed("Progress: {") is None
    assert parser.feed('"State": "MUXING"') is None
    assert parser.feed("}") == ("Progress", {"State": "MUXING"})


def test_parse_blocks_keeps_the_last_of_each_name():
    blocks = parse_blocks(ENCODE)
    assert set(blocks) == {"Version", "Progress"}
    assert blocks["Progress"]["State"] == "WORKDONE"


def test_handbrakes_own_rate_and_eta_win_when_usable():
    block = {
        "State": "WORKING",
        "Working": {"Progress": 0.5, "Rate": 120.0, "ETASeconds": 7, "Pass": 1, "PassCount": 1},
    }
    assert from_block(block) == Progress("encoding", 0.5, 120.0, 7.0)
    meter = ProgressMeter(frames_total=1000)
    assert meter.update(block, 0.0) == Progress("encoding", 0.5, 120.0, 7.0)


def test_meter_derives_fps_and_eta_from_progress_speed():
    def working(p: float) -> dict:
        return {"State": "WORKING", "Working": {"Progress": p, "Rate": 2e-7, "ETASeconds": 0}}

    meter = ProgressMeter(frames_total=300, window_s=10)
    first = meter.update(working(0.1), now=100.0)
    assert first is not None and first.fps is None and first.eta_s is None  # too early to tell
    later = meter.update(working(0.3), now=102.0)
    speed = (0.3 - 0.1) / 2.0
    assert later is not None
    assert abs(later.fps - speed * 300) < 1e-9
    assert abs(later.eta_s - (1 - 0.3) / speed) < 1e-9
    # Progress never goes backwards, even if a block says so.
    assert meter.update(working(0.2), now=103.0).progress == 0.3


def test_pass_two_of_two_counts_from_the_middle():
    block = {
        "State": "WORKING",
        "Working": {"Progress": 0.5, "Pass": 2, "PassCount": 2, "Rate": 0.0, "ETASeconds": 30},
    }
    p = from_block(block)
    assert p.progress == 0.75 and p.eta_s is None  # HandBrake's ETA is for one pass only


def test_nonsense_values_do_not_break_it():
    for working in (
        {"Progress": "half", "Pass": None, "PassCount": float("inf"), "Rate": True},
        {"Progress": float("nan"), "PassCount": -3, "Pass": 99},
        {"Progress": 7.5, "PassCount": 10**30},
    ):
        p = from_block({"State": "WORKING", "Working": working})
        assert p is not None and 0.0 <= p.progress <= 1.0
    assert from_block({"State": 3}) is None
    assert from_block({}) is None
    assert from_block({"State": "SCANNING", "Scanning": {"Progress": 0.5}}).phase == "scanning"
    assert from_block({"State": "WORKING", "Working": []}).progress == 0.0
    assert json.loads(json.dumps(from_block({"State": "MUXING"}).__dict__))["progress"] == 1.0
