"""Which HandBrakeCLI arguments of a profile would set what vidd sets itself (input,
output, format, title, scan, JSON, preset files), as HandBrakeCLI's getopt_long reads
them: not only `-o FILE` and `--output=FILE`, but also `-oFILE`, a cluster such as
`-Oo FILE`, and an abbreviation such as `--outp FILE`. A worker gets its profile's
arguments from the broker's message, so it checks them this way before it runs any.
"""

from __future__ import annotations

from collections.abc import Iterable

# Arguments the encoder adds itself; a profile may not set them.
RESERVED_ARGS = (
    "-i",
    "--input",
    "-o",
    "--output",
    "-f",
    "--format",
    "--json",
    "--scan",
    "-t",
    "--title",
    "--preset-import-file",
    "--preset-import-gui",
)

RESERVED_LONG = tuple(a for a in RESERVED_ARGS if a.startswith("--"))
RESERVED_SHORT = frozenset(a[1] for a in RESERVED_ARGS if len(a) == 2)  # i o f t
# Short options that take no value: in a cluster (`-Oo`) the next letter is an option too.
NO_VALUE_SHORT = frozenset("hzmOI2Tg")
# Whole option names that also begin a reserved one: getopt takes an exact name as is.
EXACT_LONG = frozenset({"--preset"})


def reserved_arg(args: Iterable[str]) -> str | None:
    """The first argument that sets what vidd sets itself, or None."""
    for arg in args:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name in RESERVED_ARGS:
                return arg
            if len(name) > 2 and name not in EXACT_LONG:
                if any(option.startswith(name) for option in RESERVED_LONG):
                    return arg  # an abbreviation: getopt_long takes any unambiguous one
        elif arg.startswith("-"):
            for letter in arg[1:]:
                if letter in RESERVED_SHORT:
                    return arg
                if letter not in NO_VALUE_SHORT:
                    break  # the rest is this option's value
    return None
