"""The options of an import run, declared once as Beam pipeline options.

`OPTIONS` is what `profile-import run --help` lists (the command line adds
these arguments to its `run` parser), what Beam knows as `ImportOptions`
(`runners.beam_options`), what a Dataflow Flex Template declares as its
parameters (`runners/dataflow/metadata.json`, checked against it by the
tests), and what the template's launcher parses. No Beam import here: the
command line's reading commands start without it. Each
option has its Beam spelling (`--max_rejects`) and its command-line one
(`--max-rejects`); both work everywhere.

For Beam and a template, flags take an optional value (`--allow_reapply`,
`--allow_reapply=true`), because a template passes every parameter as
`--name=value`; on the command line they take none.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES

DEFAULT_STORE = "profile-store"


def _number(text: str, kind: type[int] | type[float], what: str) -> Any:
    """`text` as a number, or an error naming the value (argparse names the option)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if math.isnan(value):  # unequal to every bound, so no range check would refuse it
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value: int = _number(text, int, "a whole number, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value


def positive_int(text: str) -> int:
    value: int = _number(text, int, "a whole number, 1 or more")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return value


def _ratio(text: str) -> float:
    value: float = _number(text, float, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value: float = _number(text, float, "a number, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, not {text!r}")


@dataclass(frozen=True)
class Option:
    """One option of `run`: its Beam name (`max_rejects`), help and parsing."""

    name: str
    help: str
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    default: Any = None
    flag: bool = False  # a boolean: present, or `=true` / `=false`
    cli: str | None = None  # the command line's spelling, when not the name's

    @property
    def cli_name(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")

    def add_to(self, parser: Any, *, command_line: bool) -> None:
        names = [self.cli_name]
        if self.cli_name != f"--{self.name}":
            names.append(f"--{self.name}")
        if self.flag and command_line:
            # On the command line a flag takes no value, so that it never
            # swallows the INPUT after it.
            parser.add_argument(*names, dest=self.name, action="store_true", help=self.help)
            return
        if self.flag:
            parser.add_argument(
                *names,
                dest=self.name,
                nargs="?",
                const=True,
                default=False,
                type=_boolean,
                metavar="true|false",
                help=self.help,
            )
            return
        parser.add_argument(
            *names,
            dest=self.name,
            type=self.type,
            default=self.default,
            metavar=self.metavar,
            help=self.help,
        )


OPTIONS: tuple[Option, ...] = (
    Option(
        "inputs",
        "comma-separated input files, globs or URLs, applied in that order (the template's "
        "inputs; the command line takes them as INPUT arguments)",
        metavar="INPUTS",
    ),
    Option(
        "store",
        f"the profile store: a folder (default ./{DEFAULT_STORE})",
        metavar="PATH",
        default=DEFAULT_STORE,
    ),
    Option("rejects", "where rejected lines go (NDJSON); - is standard output", metavar="FILE"),
    Option("report", "where the JSON report goes (default and -: standard output)", "FILE"),
    Option(
        "changes",
        "where the run's changes go once it has published (NDJSON, one a profile created, "
        "updated or deleted; with --dry-run, those it would make); - is standard output",
        metavar="DEST",
    ),
    Option(
        "default_compartment_id",
        "the compartment of lines that give a user_account_id alone",
        metavar="ID",
    ),
    Option(
        "max_rejects",
        "fail the run, publishing nothing, past N rejected lines",
        metavar="N",
        type=_non_negative_int,
    ),
    Option(
        "max_reject_ratio",
        "fail the run, publishing nothing, past this share of rejected non-blank lines",
        metavar="R",
        type=_ratio,
    ),
    Option(
        "allow_reapply",
        "apply every input as given, even those this store has applied already",
        flag=True,
    ),
    Option(
        "redact_rejects",
        "rejects without the raw line, messages without values from the data",
        flag=True,
    ),
    Option(
        "profile_schema",
        "a JSON Schema (Draft 2020-12) every UPSERT's user_profile must satisfy",
        metavar="FILE",
    ),
    Option(
        "properties_file",
        "typed declarations of user_profile properties (a JSON array, see the README)",
        metavar="FILE",
    ),
    Option(
        "allow_undeclared_properties",
        "with --properties-file: accept properties it does not declare",
        flag=True,
    ),
    # `--dry_run` is Beam's own (Dataflow's): this one's Beam name differs.
    Option(
        "import_dry_run",
        "check and count everything, write nothing to the store",
        flag=True,
        cli="--dry-run",
    ),
    Option(
        "lock_timeout",
        "wait this long for another run on the same store (default 0: fail at once)",
        metavar="SECONDS",
        type=_non_negative_float,
        default=0.0,
    ),
    Option(
        "max_line_bytes",
        f"the line size limit in bytes (default {DEFAULT_MAX_LINE_BYTES})",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
    ),
    Option(
        "split_bytes",
        f"the size of the pieces inputs are read in, in parallel (default {DEFAULT_SPLIT_BYTES})",
        metavar="N",
        type=positive_int,
        default=DEFAULT_SPLIT_BYTES,
    ),
    Option("buckets", "the bucket count of a new store (default 64)", "N", positive_int),
)


def add_run_options(parser: Any, *, command_line: bool) -> None:
    """Adds the options of `run` to an argparse parser: the command line's
    (its inputs are INPUT arguments, its flags take no value), or one that
    parses Beam's or a template's `--name=value` options."""
    for option in OPTIONS:
        if option.name != "inputs" or not command_line:
            option.add_to(parser, command_line=command_line)


def split_inputs(text: str | None) -> list[str]:
    """The template's comma-separated `inputs`, in order."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_run_args(args: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options of `run` in `args`, and the rest (Beam's own options)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_run_options(parser, command_line=False)
    return parser.parse_known_args(list(args))


def template_metadata() -> dict[str, Any]:
    """The Flex Template's `metadata.json`: one parameter per option of `run`."""
    parameters = []
    for option in OPTIONS:
        parameter: dict[str, Any] = {
            "name": option.name,
            "label": option.name.replace("_", " ").capitalize(),
            "helpText": option.help,
            "isOptional": option.name != "inputs",
        }
        if option.flag:
            parameter["regexes"] = ["^(true|false)$"]
        parameters.append(parameter)
    return {
        "name": "profile-import",
        "description": (
            "Imports user profile commands (NDJSON) into a profile store: parse, check, "
            "apply each user's commands in input order, publish all or nothing."
        ),
        "parameters": parameters,
    }
