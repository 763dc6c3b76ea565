"""MATRIX.toml: the builds of a release, each an ordinary `rkconvert build`.

    [defaults]            # options every entry gets, named as in `rkconvert build --help`
    resolution = 64
    layer-report = "off"

    [axes]                # every combination is an entry
    model = ["sd15:mini", "bk-sdm-tiny:mini"]
    target = ["rk3588", "rk3576"]
    dtype = ["float16", "w8a8"]

    [[entry]]             # more entries, one by one (name: optional)
    name = "sd15-rk3562"
    model = "sd15:mini"
    target = "rk3562"
    skip-pass = ["host_time_projection"]

An option's value is a string or number (`--opt value`), true for a flag, true or false for an on/off
option (`--hybrid` / `--no-hybrid`), or a list for a repeatable one (`skip-pass`, `enable-pass`).
Relative paths in values are relative to the file's folder, where the builds run.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from converter.common.errors import UserError

SECTIONS = ("defaults", "axes", "entry")
REQUIRED = ("model", "target")


@dataclass(frozen=True)
class Entry:
    name: str
    options: dict  # build option name (as on the command line, without --) -> value

    def arguments(self) -> list[str]:
        """The entry as `rkconvert build` arguments."""
        args = []
        for key, value in self.options.items():
            for v in value if isinstance(value, list) else [value]:
                args += [f"--{key}" if v is True else f"--no-{key}"] if isinstance(v, bool) else [f"--{key}", str(v)]
        return args


def _option_name(key: str) -> str:
    return key.replace("_", "-")


def _check_value(kind: str, value) -> str | None:
    """What is wrong with `value` for an option of this kind (flag, switch, multiple, value), or None."""
    if kind == "flag":
        return None if value is True else "expected true (a flag)"
    if kind == "switch":
        return None if isinstance(value, bool) else "expected true or false"
    values = value if kind == "multiple" and isinstance(value, list) else [value]
    if any(isinstance(v, (bool, dict, list)) for v in values):
        return "expected a string or a number" + (" (or a list of them)" if kind == "multiple" else "")
    return None


def _checked(options: dict, where: str, known: dict[str, str], path: Path) -> dict:
    """Options named as on the command line; `known`: option name -> kind (flag, switch, multiple, value)."""
    out = {}
    for key, value in options.items():
        name = _option_name(key)
        if name in ("out", "rebuild"):
            raise UserError(f"{path}: {where}: '{key}' is the matrix's to set (rkconvert matrix --out)")
        if name not in known:
            raise UserError(f"{path}: {where}: unknown build option '{key}' (see rkconvert build --help)")
        problem = _check_value(known[name], value)
        if problem:
            raise UserError(f"{path}: {where}: {key} = {value!r}: {problem}")
        out[name] = value
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def load(path: Path, known: dict[str, str]) -> list[Entry]:
    """The entries of a MATRIX.toml, in order (axes' combinations first); UserError on anything wrong."""
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: not a readable matrix ({type(e).__name__}: {e})") from None
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise UserError(f"{path}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    defaults = _checked(spec.get("defaults", {}), "[defaults]", known, path)
    axes = {}
    for key, values in spec.get("axes", {}).items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: [axes] {key}: expected a non-empty list of values")
        for value in values:
            axes.update(_checked({key: value}, "[axes]", known, path))
        axes[_option_name(key)] = values
    entries = []
    varying = [k for k, v in axes.items() if len(v) > 1]
    for combo in itertools.product(*axes.values()) if axes else []:
        options = {**defaults, **dict(zip(axes, combo))}
        entries.append(_entry(options, "-".join(_slug(str(options[k])) for k in varying or REQUIRED), path, "[axes]"))
    for i, raw in enumerate(spec.get("entry", []), 1):
        raw = dict(raw)
        name = raw.pop("name", None)
        options = {**defaults, **_checked(raw, f"[[entry]] {i}", known, path)}
        entries.append(_entry(options, _slug(str(name)) if name else "-".join(_slug(str(options.get(k, "")))
                                                                            for k in REQUIRED), path, f"[[entry]] {i}"))
    if not entries:
        raise UserError(f"{path}: no builds: give [axes] or [[entry]] tables")
    names = [e.name for e in entries]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise UserError(f"{path}: two entries are named '{twice}' (give one a name = \"...\")")
    return entries


def _entry(options: dict, name: str, path: Path, where: str) -> Entry:
    missing = [k for k in REQUIRED if k not in options]
    if missing:
        raise UserError(f"{path}: {where}: no {missing[0]} (every build needs a model and a target)")
    return Entry(name, options)
