"""`profile-import`: the command line.

    profile-import run [options] [beam options] INPUT...
    profile-import export [--store PATH] [--format ndjson|parquet] [--output FILE]
    profile-import verify [--store PATH] [--version N]
    profile-import get [--store PATH] (--email-hash H | --user-agent-id U |
                                       --compartment-id C --user-account-id A)
    profile-import get [--store PATH] --ids FILE [--properties a,b.c]
    profile-import list [--store PATH] [--where 'PATH OP JSON' ...] [--properties a,b.c]
                        [--limit N] [--cursor C]
    profile-import versions | rollback --to N | prune --keep N   [--store PATH]

Exit status: 0 done (SUCCEEDED, SUCCEEDED_WITH_ERRORS, ALREADY_APPLIED; a
profile found; a sound store), 1 failed (FAILED; no such profile; a damaged
store), 2 bad usage or unreadable input. Errors are one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES
from profile_import.core.identifiers import IDENTIFIER_FIELDS, Identifier, normalise_value
from profile_import.core.ids import AskedIds, IdsError, read_ids
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES
from profile_import.stores import DEFAULT_STORE, ProfileStore, StoreError, open_store

from . import read_commands
from .local_worker import VERBOSE_ENV

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH",
        help=f"the profile store folder (default: ./{DEFAULT_STORE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profile-import",
        description="Import user profile commands (NDJSON) into a profile store.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="apply import files to the store",
        description=(
            "Apply NDJSON import commands to the store. Options this command does not "
            "know are passed to Apache Beam as pipeline options, in --name=value form "
            "(for example --direct_num_workers=2); --runner picks another Beam runner."
        ),
    )
    run.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, globs or URLs (.gz .bz2 .xz .zst .lz4 decompressed); - is standard input",
    )
    _store_option(run)
    run.add_argument(
        "--rejects", metavar="FILE", help="where rejected lines go (NDJSON); - is standard output"
    )
    run.add_argument(
        "--report", metavar="FILE", help="where the JSON report goes (default and -: stdout)"
    )
    run.add_argument("--default-compartment-id", metavar="ID")
    run.add_argument("--max-rejects", type=_non_negative_int, metavar="N")
    run.add_argument("--max-reject-ratio", type=_ratio, metavar="R")
    run.add_argument("--allow-reapply", action="store_true")
    run.add_argument("--redact-rejects", action="store_true")
    run.add_argument("--profile-schema", metavar="FILE")
    run.add_argument(
        "--properties-file",
        metavar="FILE",
        help="typed declarations of user_profile properties (JSON array, see README)",
    )
    run.add_argument(
        "--allow-undeclared-properties",
        action="store_true",
        help="with --properties-file: accept properties it does not declare",
    )
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS")
    run.add_argument("--max-line-bytes", type=_positive_int, default=DEFAULT_MAX_LINE_BYTES)
    run.add_argument("--split-bytes", type=_positive_int, default=DEFAULT_SPLIT_BYTES)
    run.add_argument("--buckets", type=_positive_int, help="buckets of a new store")
    run.add_argument("--runner", help="the Beam runner (default: the local FnApiRunner)")
    run.add_argument("--quiet", action="store_true", help="no progress, no summary line")
    run.add_argument("--verbose", action="store_true", help="show Beam's own log")

    export = commands.add_parser("export", help="write every profile, by identifier")
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

    verify = commands.add_parser(
        "verify", help="check every file and line of a version against its manifest"
    )
    _store_option(verify)
    verify.add_argument(
        "--version",
        type=_positive_int,
        metavar="N",
        dest="version_number",
        help="the version to check (default: the current one)",
    )

    get = commands.add_parser("get", help="print one profile as JSON")
    _store_option(get)
    get.add_argument("--email-hash")
    get.add_argument("--user-agent-id")
    get.add_argument("--compartment-id")
    get.add_argument("--user-account-id")
    get.add_argument(
        "--ids",
        metavar="FILE",
        help="many profiles: an NDJSON file of identifiers, one a line ('-': stdin)",
    )
    get.add_argument("--properties", metavar="A,B.C", help="with --ids: only these properties")

    listing = commands.add_parser(
        "list", help="print a page of profiles, by identifier, filtered on their properties"
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
        type=_positive_int,
        default=read_commands.DEFAULT_LIMIT,
        metavar="N",
        help=f"profiles per page (default {read_commands.DEFAULT_LIMIT})",
    )
    listing.add_argument(
        "--cursor", metavar="C", help="the next_cursor of the previous page (on stderr)"
    )

    versions = commands.add_parser("versions", help="list the store's kept versions")
    _store_option(versions)

    rollback = commands.add_parser("rollback", help="publish an older version again")
    _store_option(rollback)
    rollback.add_argument("--to", type=_positive_int, required=True, metavar="VERSION")

    prune = commands.add_parser("prune", help="drop old versions and their files")
    _store_option(prune)
    prune.add_argument("--keep", type=_positive_int, required=True, metavar="N")
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"profile-import: {message}", file=sys.stderr)
    raise SystemExit(code)


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    # Imported here: Beam takes a second to import, and only `run` needs it.
    from .execution import Execution, RunSettings

    if args.default_compartment_id is not None and not args.default_compartment_id:
        _fail("--default-compartment-id must not be empty", EXIT_USAGE)
    if args.runner:
        beam_args = [f"--runner={args.runner}", *beam_args]
    settings = RunSettings(
        inputs=args.inputs,
        store=args.store,
        rejects_path=args.rejects,
        report_path=args.report,
        default_compartment_id=args.default_compartment_id,
        max_rejects=args.max_rejects,
        max_reject_ratio=args.max_reject_ratio,
        allow_reapply=args.allow_reapply,
        redact_rejects=args.redact_rejects,
        profile_schema_path=args.profile_schema,
        properties_path=args.properties_file,
        allow_undeclared_properties=args.allow_undeclared_properties,
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
        max_line_bytes=args.max_line_bytes,
        split_bytes=args.split_bytes,
        buckets=args.buckets,
        show_progress=not args.quiet and sys.stderr.isatty(),
        beam_args=beam_args,
    )
    execution = Execution(settings)
    outcome = execution.run()
    text = (json.dumps(outcome.report, indent=2) + "\n").encode()
    try:
        if not outcome.report_written:
            execution.report_output.write(text)
    except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
        # Proven writable before the run, yet failing now (a full disk): the
        # run's outcome stands, published or not, and the report goes to
        # stdout instead, so a retry does not fail forever on a done import.
        print(
            f"profile-import: warning: cannot write the report to "
            f"{execution.report_output}: {e}; it follows on standard output",
            file=sys.stderr,
        )
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    if not args.quiet or outcome.exit_code:
        print(f"profile-import: {outcome.report['message']}", file=sys.stderr)
        if outcome.report.get("rejects_file"):
            print(f"profile-import: rejects in {outcome.report['rejects_file']}", file=sys.stderr)
    return outcome.exit_code


def _identifier(args: argparse.Namespace) -> Identifier:
    given = [
        name
        for name in ("email_hash", "user_agent_id", "compartment_id", "user_account_id")
        if getattr(args, name) is not None
    ]
    if given == ["email_hash"] and args.email_hash:
        return Identifier.email_hash(args.email_hash)
    if given == ["user_agent_id"] and args.user_agent_id:
        return Identifier.user_agent_id(args.user_agent_id)
    if sorted(given) == ["compartment_id", "user_account_id"]:
        compartment = normalise_value(args.compartment_id)
        account = normalise_value(args.user_account_id)
        if compartment and account:
            return Identifier.account(compartment, account)
    _fail(
        "get needs exactly one identifier: --email-hash H, --user-agent-id U, "
        "or --compartment-id C with --user-account-id A",
        EXIT_USAGE,
    )


def _write_records(records: Any) -> None:
    out = sys.stdout.buffer
    try:
        for record in records:
            out.write(record)
            out.write(b"\n")
        out.flush()
    except BrokenPipeError:
        # `export | head`: the reader left, not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _read_ids(path: str) -> AskedIds:
    try:
        if path == "-":
            return read_ids(sys.stdin.buffer)
        with open(path, "rb") as f:
            return read_ids(f)
    except IdsError as e:
        _fail(f"--ids {path}: {e}", EXIT_USAGE)
    except OSError as e:
        _fail(f"--ids {path}: cannot be read: {e.strerror or e}", EXIT_USAGE)


def _get_many(store: ProfileStore, args: argparse.Namespace) -> int:
    if any(getattr(args, name) is not None for name in IDENTIFIER_FIELDS):
        _fail("get: --ids cannot be combined with a single identifier", EXIT_USAGE)
    batch = read_commands.Batch(store, _read_ids(args.ids), args.properties)
    _write_records(batch)
    print(json.dumps(batch.info), file=sys.stderr)
    return EXIT_OK


def _list(store: ProfileStore, args: argparse.Namespace) -> int:
    page = read_commands.Page(store, args.where, args.properties, args.limit, args.cursor)
    _write_records(page)
    print(json.dumps(page.info.as_json()), file=sys.stderr)
    return EXIT_OK


def _export(store: ProfileStore, args: argparse.Namespace) -> int:
    from . import export as exports

    output = None if args.output in (None, "-") else args.output
    if args.format == "parquet" and output is None:
        _fail("export --format parquet needs --output FILE", EXIT_USAGE)
    if output is not None and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        _fail(f"export --output {output}: no such folder", EXIT_USAGE)
    if output is None:
        _write_records(store.export())
    elif args.format == "parquet":
        exports.export_parquet(store.export(), output)
    else:
        exports.export_ndjson(store.export(), output)
    return EXIT_OK


def _verify(store: ProfileStore, number: int | None) -> int:
    result = store.verify(number)
    for problem in result.problems:
        print(problem)
    what = f"version {result.version}: {result.files:,} files, {result.lines:,} lines"
    if result.sound:
        print(f"{what}: sound (line counts, sizes, checksums, keys and records as recorded)")
        return EXIT_OK
    print(f"{what}: DAMAGED, {len(result.problems):,} problem(s)")
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    # Beam logs its plumbing (optional cloud clients missing, ...) and, on a
    # failure, whole worker tracebacks: noise for a command-line user, who gets
    # our one-line summary instead. --verbose shows it all.
    verbose = "--verbose" in (argv if argv is not None else sys.argv)
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # for the worker processes too
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.disable(logging.ERROR)
    # SIGTERM (cron, Airflow, kill) unwinds like Ctrl-C, so a staged run is discarded.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    stray = [a for a in extra if not a.startswith("--")]
    if stray:
        parser.error(
            f"unrecognized arguments: {' '.join(stray)} "
            "(Beam options are written --name=value, before or after the inputs)"
        )
    try:
        if args.command == "run":
            return _run(args, extra)
        store = open_store(args.store)
        if not store.exists():
            # A mistyped path must not read as an empty store.
            _fail(f"no profile store at {args.store}", EXIT_FAILED)
        if args.command == "export":
            return _export(store, args)
        if args.command == "verify":
            return _verify(store, args.version_number)
        if args.command == "list":
            return _list(store, args)
        if args.command == "get" and args.ids is not None:
            return _get_many(store, args)
        if args.command == "get" and args.properties is not None:
            _fail("get: --properties goes with --ids", EXIT_USAGE)
        if args.command == "get":
            record = store.get(_identifier(args))
            if record is None:
                print("profile-import: no such profile", file=sys.stderr)
                return EXIT_FAILED
            _write_records([record])
            return EXIT_OK
        if args.command == "versions":
            current = store.current()
            for v in store.versions():
                marker = "*" if current and v.number == current.number else " "
                what = (
                    v.execution.get("execution_id")
                    or f"rollback to {v.execution.get('rollback_to')}"
                )
                status = v.execution.get("status", "")
                profiles = f"{v.profiles:>12,} profiles"
                print(f"{marker} {v.number:>6}  {v.created_at}  {profiles}  {what} {status}")
            return EXIT_OK
        with store.lock():
            if args.command == "rollback":
                version = store.rollback(args.to)
                again = f"version {args.to} published again as version {version.number}"
                print(f"profile-import: {again}", file=sys.stderr)
            else:
                dropped = store.prune(args.keep)
                print(f"profile-import: pruned {len(dropped)} version(s)", file=sys.stderr)
        return EXIT_OK
    except read_commands.ReadUsageError as e:
        _fail(str(e), EXIT_USAGE)
    except StoreError as e:
        _fail(str(e), EXIT_FAILED)
    except OSError as e:
        _fail(f"store {args.store}: {e}", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted; the store is unchanged", 130)


if __name__ == "__main__":
    sys.exit(main())
