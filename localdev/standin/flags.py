"""tensorflow_model_server's command line, parsed the way the real binary parses it.

Facts followed (read, not copied):

* the flag list and types: ``tensorflow_serving/model_servers/main.cc`` at
  tag 2.20.0 (each ``tensorflow::Flag(...)`` entry; the type is that of the
  option it binds in ``model_servers/server.h``);
* the grammar: TensorFlow's ``Flags::Parse`` (``xla/tsl/util/command_line_flags.cc``,
  which ``tensorflow/core/util/command_line_flags.h`` forwards to). Only
  ``--name=value`` is a flag; a boolean may also be bare ``--name``;
  ``--name value`` leaves both words unparsed, and so does ``-name=value``.
  Flags are matched in the list's order by prefix, so ``--portx=1`` is
  unknown, not ``--port``. A value that does not parse is logged as
  ``Couldn't interpret value V for flag F.`` and makes ``Parse`` fail
  (main.cc then prints the usage and returns -1). ``--help`` fails it too.
  Whatever is left is unknown: main.cc prints ``unknown argument: <first>``
  and the usage, and goes on.

The table of flags is ``tfserving_operator.release.SERVER_FLAGS``, the one place
the release pin lives (the operator's admission rules come from it too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The order of the table matters: the first flag whose name is a prefix of
# the argument is tried first (main.cc's order, kept by release.py).
from tfserving_operator.release import SERVER_FLAGS as SERVER_FLAGS

PROGRAM = "/usr/bin/tensorflow_model_server"

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# absl::SimpleAtoi: optional surrounding ASCII whitespace and sign, decimal digits.
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")


@dataclass(frozen=True)
class CommandLine:
    """What ``Flags::Parse`` made of an argv (without the program name)."""

    values: Mapping[str, Any]
    unknown: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    help_requested: bool = False

    @property
    def ok(self) -> bool:
        """``Flags::Parse`` returned true: main.cc goes on."""
        return not self.errors and not self.help_requested


def _convert(kind: str, text: str) -> Any:
    """The value of ``text`` for a flag of type ``kind``; ``ValueError`` if it does not parse."""
    if kind in _INT_RANGES:
        if not _INT_TEXT.fullmatch(text):
            raise ValueError(text)
        low, high = _INT_RANGES[kind]
        number = int(text)
        if not low <= number <= high:
            raise ValueError(text)
        return number
    if kind == "float":
        return float(text.strip())  # absl::SimpleAtof also takes inf/nan
    if kind == "bool":
        if text.lower() == "true" or text == "1":
            return True
        if text.lower() == "false" or text == "0":
            return False
        raise ValueError(text)
    return text


def _match(arg: str, name: str, kind: str) -> tuple[bool, str | None]:
    """Whether ``arg`` is flag ``name``; the value text (``None``: a bare boolean)."""
    if not arg.startswith("--" + name):
        return False, None
    rest = arg[len(name) + 2 :]
    if kind == "bool" and rest == "":
        return True, None
    if not rest.startswith("="):
        return False, None  # another flag whose name begins with this one
    return True, rest[1:]


def parse_command_line(argv: Sequence[str], flags: Mapping[str, str] = SERVER_FLAGS) -> CommandLine:
    """Parse arguments like ``Flags::Parse``: every argument, never stopping early."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    errors: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            unknown.extend(argv[i:])
            break
        for name, kind in flags.items():
            found, text = _match(arg, name, kind)
            if not found:
                continue
            if text is None:
                values[name] = True
            else:
                try:
                    values[name] = _convert(kind, text)
                except ValueError:
                    errors.append(f"Couldn't interpret value {text} for flag {name}.")
            break
        else:
            unknown.append(arg)
    return CommandLine(
        values=values,
        unknown=tuple(unknown),
        errors=tuple(errors),
        help_requested=bool(unknown) and unknown[0] == "--help",
    )


def _display_default(kind: str, value: Any) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "string":
        return f'"{value}"'
    if kind == "float":
        return f"{float(value):f}"
    return str(int(value))


def usage_lines(
    defaults: Mapping[str, Any], program: str = PROGRAM, flags: Mapping[str, str] = SERVER_FLAGS
) -> list[str]:
    """The usage text main.cc prints (``Flags::Usage``), one list item per line.

    The real text carries each flag's help sentence; the stand-in has none and
    prints the name, default and type columns only.
    """
    lines = [f"usage: {program}", "Flags:"]
    for name, kind in flags.items():
        empty: Any = "" if kind == "string" else 0
        shown = f"--{name}={_display_default(kind, defaults.get(name, empty))}"
        lines.append(f"\t{shown:<33}\t{kind}\t")
    return lines
