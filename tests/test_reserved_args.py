"""reserved_args.py: a profile argument that would set vidd's own input, output, format
or title is found in every form HandBrakeCLI's getopt_long accepts (HandBrakeCLI here
opens the file of `-i/x`, `-Oi/x` and `--inp /x`), and real profiles pass."""

from __future__ import annotations

import pytest

from vidd.config import DEFAULT_PROFILES
from vidd.reserved_args import reserved_arg


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "/etc/x.mp4"],
        ["--output=/etc/x.mp4"],
        ["-o/etc/x.mp4"],  # the value attached
        ["-e", "x264", "-Oo", "/etc/x.mp4"],  # in a cluster after a flag
        ["-O2Ti/etc/passwd"],
        ["--outp", "/etc/x.mp4"],  # an abbreviation
        ["--inp=/etc/passwd"],
        ["-t1"],
        ["--form", "av_mkv"],
        ["--preset-imp", "/etc/presets.json"],
        ["--json"],
    ],
)
def test_a_reserved_argument_is_found_in_every_form(args):
    assert reserved_arg(args) == next(a for a in args if a.startswith("-") and a != "-e")


@pytest.mark.parametrize(
    "args",
    [
        *(p.handbrake_args() for p in DEFAULT_PROFILES.values()),
        ["--preset", "Fast 1080p30", "-q22", "-O", "-2", "-T"],
        ["-e", "x265", "-x", "ref=1:bframes=0", "-E", "av_aac", "-6", "stereo"],
        ["-evt_h264", "--encoder-preset", "placebo", "--start-at", "seconds:1"],
        ["-d", "--deinterlace=bob", "-5", "-a", "1,2", "-s", "1"],
    ],
)
def test_real_profiles_pass(args):
    assert reserved_arg(args) is None
