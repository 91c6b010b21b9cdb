"""`vidd check-config`: everything that would stop or hobble a daemon started with this
file, each problem one line naming its key. Beyond what loading checks (types, bounds,
the token): a misspelt key with the nearest real one, the tools on PATH, each profile's
preset against HandBrakeCLI's own list, and that the folders vidd writes are writable."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import re
import shutil
import tempfile
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import children
from .config import SECTIONS, Config, ConfigError, Profile, from_dict

PRESET_LIST_TIMEOUT_S = 60.0
PRESET_FLAGS = ("--preset", "-Z")
# In `HandBrakeCLI --preset-list`: "General/" at the margin, then each preset indented
# four spaces, its description eight.
_CATEGORY = re.compile(r"^(\S.*)/\s*$")
_PRESET = re.compile(r"^ {4}(\S.*?)\s*$")


@dataclass
class Report:
    path: Path
    problems: list[str] = field(default_factory=list)
    config: Config | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "problems": self.problems}


def check(path: Path) -> Report:
    """Every problem of the config file at `path` that can be found without starting vidd."""
    path = path.resolve()
    report = Report(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.problems.append(f"{path}: file not found")
        return report
    except OSError as e:
        report.problems.append(f"{path}: cannot read it: {e.strerror or e}")
        return report
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        report.problems.append(f"{path}: not valid TOML: {e}")
        return report
    unknown = unknown_keys(raw)
    report.problems += [f"{path}: {line}" for line in unknown]
    try:
        # The rest of the file, so that a typo does not hide the problems after it.
        cfg = from_dict(_known_only(raw), path, require_tools=False)
    except ConfigError as e:
        report.problems.append(str(e))
        return report
    report.config = cfg
    report.problems += [f"{path}: {line}" for line in _tools(cfg)]
    report.problems += [f"{path}: {line}" for line in _presets(cfg)]
    report.problems += [f"{path}: {line}" for line in _folders(cfg)]
    # What loading only warns about (a missing ffmpeg) leaves vidd doing less than asked.
    report.problems += [w for w in cfg.warnings if w not in report.problems]
    return report


# -- keys ----------------------------------------------------------------------------------


def _fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _section_fields() -> dict[str, list[str]]:
    hints = typing.get_type_hints(Config)
    return {name: _fields(hints[name]) for name in SECTIONS}


def unknown_keys(raw: dict[str, Any]) -> list[str]:
    """One line per unknown section or key, with the nearest known one when there is one."""
    known = _section_fields()
    problems: list[str] = []
    for section, table in raw.items():
        if section not in known:
            problems.append(f"{section}: unknown section{_nearest(section, list(known))}")
            continue
        if not isinstance(table, dict):
            continue  # loading names the wrong type
        for key, value in table.items():
            where = f"{section}.{key}"
            if key not in known[section]:
                elsewhere = [f"{s}.{key}" for s, keys in known.items() if key in keys]
                hint = f"; did you mean `{elsewhere[0]}`?" if elsewhere else ""
                problems.append(f"{where}: unknown key{hint or _nearest(key, known[section])}")
            elif (section, key) == ("encode", "profiles") and isinstance(value, dict):
                for name, spec in value.items():
                    if isinstance(spec, dict):
                        for k in spec:
                            if k not in _fields(Profile):
                                problems.append(
                                    f"{where}.{name}.{k}: unknown key"
                                    + _nearest(k, _fields(Profile))
                                )
    return problems


def unknown_keys_of(path: Path) -> list[str]:
    """unknown_keys for the file at `path`, each line naming it; [] if it can't be read."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    return [f"{path.resolve()}: {line}" for line in unknown_keys(raw)]


def _nearest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _known_only(raw: dict[str, Any]) -> dict[str, Any]:
    known = _section_fields()
    kept: dict[str, Any] = {}
    for section, table in raw.items():
        if section not in known:
            continue
        if not isinstance(table, dict):
            kept[section] = table
            continue
        kept[section] = {k: v for k, v in table.items() if k in known[section]}
        profiles = kept[section].get("profiles") if section == "encode" else None
        if isinstance(profiles, dict):
            kept[section]["profiles"] = {
                name: {k: v for k, v in spec.items() if k in _fields(Profile)}
                if isinstance(spec, dict)
                else spec
                for name, spec in profiles.items()
            }
    return kept


# -- tools ---------------------------------------------------------------------------------


def _tools(cfg: Config) -> list[str]:
    enc = cfg.encode
    if shutil.which(enc.handbrake) is None:
        return [
            f"encode.handbrake: {enc.handbrake!r} was not found or is not executable "
            "(Debian: apt-get install handbrake-cli)"
        ]
    return []  # a missing ffmpeg is one of the config's warnings


def profile_presets(profile: Profile) -> list[str]:
    """The presets a profile names: `preset`, and `--preset X`, `--preset=X`, `-Z X` in
    its arguments."""
    found = [profile.preset] if profile.preset else []
    args = list(profile.args)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in PRESET_FLAGS and eq:
            found.append(value)
        elif arg in PRESET_FLAGS and i + 1 < len(args):
            found.append(args[i + 1])
    return found


def parse_preset_list(text: str) -> set[str]:
    """Every name HandBrakeCLI accepts: "Fast 1080p30" and "General/Fast 1080p30"."""
    names: set[str] = set()
    category = ""
    for line in text.splitlines():
        if m := _CATEGORY.match(line):
            category = m.group(1)
        elif m := _PRESET.match(line):
            names.add(m.group(1))
            if category:
                names.add(f"{category}/{m.group(1)}")
    return names


async def preset_names(cfg: Config) -> set[str]:
    """HandBrakeCLI's presets, asked in the box HandBrake's other calls run in."""
    with tempfile.TemporaryDirectory(prefix="vidd-presets-") as home:
        box = children.Box(home=Path(home), pass_env=cfg.encode.child_env)
        code, out, err = await children.run(
            [cfg.encode.handbrake, "--preset-list"], timeout_s=PRESET_LIST_TIMEOUT_S, box=box
        )
    if code != 0:
        raise OSError(f"HandBrakeCLI --preset-list exited with {code}")
    return parse_preset_list(out + "\n" + err)  # it writes the list on stderr


def _presets(cfg: Config) -> list[str]:
    wanted = {
        name: presets
        for name, profile in cfg.encode.profiles.items()
        if (presets := profile_presets(profile))
    }
    if not wanted or shutil.which(cfg.encode.handbrake) is None:
        return []
    try:
        known = asyncio.run(preset_names(cfg))
    except (OSError, TimeoutError) as e:
        return [f"encode.handbrake: could not list its presets: {e}"]
    return [
        f"encode.profiles.{name}: HandBrakeCLI has no preset {preset!r}"
        + _nearest(preset, sorted(known))
        for name, presets in wanted.items()
        for preset in presets
        if preset not in known
    ]


# -- folders -------------------------------------------------------------------------------


def _folders(cfg: Config) -> list[str]:
    st = cfg.storage
    folders = {"storage.data_dir": st.data_dir}
    folders["storage.inbox" if st.inbox is not None else "storage.data_dir (inbox/)"] = st.inbox_dir
    if st.output_dir is not None:
        folders["storage.output_dir"] = st.output_dir
    problems = []
    for key, folder in folders.items():
        if (why := unwritable(folder)) is not None:
            problems.append(f"{key}: vidd can't write to {folder}: {why}")
    return problems


def unwritable(folder: Path) -> str | None:
    """Why vidd could not write files in `folder` (creating it if missing), or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".vidd-check-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None
