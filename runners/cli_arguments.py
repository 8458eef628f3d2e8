"""The command line's arguments: `profile-import`'s parser, every subcommand
and its options (`run`'s are `runners.options`'), and the one-line usage
errors (`ArgumentParser`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import profile_import
from profile_import.stores import DEFAULT_STORE

from . import read_commands
from .options import add_run_options, positive_int

PROG = "profile-import"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS = """exit status:
  0    done: SUCCEEDED, SUCCEEDED_WITH_ERRORS or ALREADY_APPLIED (get: the profile was found;
       verify: the version is sound)
  1    failed: FAILED, the store is unchanged (get: no such profile; a damaged or missing store)
  2    bad usage or an unreadable input: nothing ran
  130  interrupted (Ctrl-C, SIGTERM): the store is unchanged"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (cause first) rather than a usage dump,
    and no abbreviated options: `run` passes the options it does not know to Beam,
    so `--stor` must be one of those, never a silent `--store`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)


class _Version(argparse.Action):
    """`--version`, with the version read only when asked (see `profile_import`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{parser.prog} {profile_import.__version__}")
        parser.exit()


def _subcommand(commands: Any, name: str, help: str, description: str | None = None) -> Any:
    return commands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH",
        help=f"the profile store folder (default: ./{DEFAULT_STORE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Import user profile commands (NDJSON) into a profile store.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _subcommand(
        commands,
        "run",
        "apply import files to the store",
        "Apply NDJSON import commands to the store. Options this command does not "
        "know are passed to Apache Beam as pipeline options, in --name=value form "
        "(for example --direct_num_workers=2).",
    )
    run.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, globs or URLs, applied in the order given (.gz .bz2 .xz .zst .lz4 are "
        "decompressed); - is standard input",
    )
    # The options of a run, declared once (runners.options): Beam and a Flex
    # Template know them by the same names.
    add_run_options(run, command_line=True)
    run.add_argument(
        "--runner",
        help="what runs the import. Default, with no Beam option: without Beam (InProcess: "
        "this process, and from 1 MiB a forked worker per usable core) for an import that "
        "fits in memory (up to 48 MiB of input, or local uncompressed files up to 512 MiB "
        "with memory to spare), else FnApiRunner, Beam's local runner (DirectRunner is "
        "the same), one worker per core. InProcess asks for no Beam whatever the size; "
        "any other Beam runner (PortableRunner, DataflowRunner, ...) is passed to Beam, "
        "and needs a store its workers reach",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="errors only: no progress, no log, no summary line",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="also show Beam's own log and its workers' output",
    )

    export = _subcommand(commands, "export", "write every profile, by identifier")
    _store_option(export)
    export.add_argument(
        "--format",
        choices=("ndjson", "parquet"),
        default="ndjson",
        help="NDJSON export records (default), or Parquet with a fixed schema",
    )
    export.add_argument(
        "--output",
        metavar="FILE",
        help="where to write (default: stdout; required for parquet); written whole or not at all",
    )

    verify = _subcommand(
        commands, "verify", "check every file and line of a version against its manifest"
    )
    _store_option(verify)
    verify.add_argument(
        "--version",
        type=positive_int,
        metavar="N",
        dest="version_number",
        help="the version to check (default: the current one)",
    )

    get = _subcommand(
        commands,
        "get",
        "print one profile as JSON",
        "Print one profile as JSON. Give one identifier: --email-hash, --user-agent-id, "
        "or --compartment-id with --user-account-id.",
    )
    _store_option(get)
    get.add_argument("--email-hash", metavar="H", help="the profile's email_hash")
    get.add_argument("--user-agent-id", metavar="U", help="the profile's user_agent_id")
    get.add_argument(
        "--compartment-id",
        metavar="C",
        help="the profile's compartment_id (with --user-account-id)",
    )
    get.add_argument(
        "--user-account-id",
        metavar="A",
        help="the profile's user_account_id (with --compartment-id)",
    )
    get.add_argument(
        "--ids",
        metavar="FILE",
        help="many profiles: an NDJSON file of identifiers, one a line ('-': stdin)",
    )
    get.add_argument("--properties", metavar="A,B.C", help="with --ids: only these properties")

    listing = _subcommand(
        commands, "list", "print a page of profiles, by identifier, filtered on their properties"
    )
    _store_option(listing)
    listing.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="'PATH OP JSON'",
        help="a filter on user_profile, e.g. 'age gte 18' or 'country in [\"FR\",\"DE\"]'; "
        "operators eq neq lt lte gt gte in notin; several are ANDed",
    )
    listing.add_argument(
        "--properties", metavar="A,B.C", help="only these properties (dotted paths)"
    )
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=read_commands.DEFAULT_LIMIT,
        metavar="N",
        help=f"profiles per page (default {read_commands.DEFAULT_LIMIT})",
    )
    listing.add_argument(
        "--cursor", metavar="C", help="the next_cursor of the previous page (on stderr)"
    )

    changes = _subcommand(
        commands,
        "changes",
        "write the changes since a store version, by identifier",
        "Write one change (created, updated or deleted, as the profile stands now) for "
        "every profile that differs between store version --since and the current one, "
        "by identifier; then one JSON line on stderr whose version is the next --since.",
    )
    _store_option(changes)
    changes.add_argument(
        "--since",
        type=version_number,
        required=True,
        metavar="V",
        help="the store version the consumer has (0: the empty store)",
    )
    changes.add_argument(
        "--format",
        choices=("ndjson", "parquet"),
        default="ndjson",
        help="NDJSON changes (default), or Parquet with a fixed schema",
    )
    changes.add_argument(
        "--output",
        metavar="FILE",
        help="where to write (default: stdout; required for parquet); written whole or not at all",
    )

    versions = _subcommand(commands, "versions", "list the store's kept versions")
    _store_option(versions)

    rollback = _subcommand(commands, "rollback", "publish an older version again")
    _store_option(rollback)
    rollback.add_argument(
        "--to",
        type=positive_int,
        required=True,
        metavar="VERSION",
        help="the version to publish again (see versions)",
    )

    prune = _subcommand(commands, "prune", "drop old versions and their files")
    _store_option(prune)
    prune.add_argument(
        "--keep",
        type=positive_int,
        required=True,
        metavar="N",
        help="how many of the newest versions to keep",
    )

    compact = _subcommand(
        commands,
        "compact",
        "fold every bucket's delta segments into new bases (a new version)",
    )
    _store_option(compact)
    return parser


def fail(message: str, code: int) -> NoReturn:
    """Exits with one line on stderr: `profile-import: error: CAUSE...`."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def version_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a store version (0, 1, 2, ...), not {text!r}")
    return number
