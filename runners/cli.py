"""`profile-import`: the command line.

    profile-import run [options] [beam options] INPUT...
    profile-import export [--store PATH]
    profile-import get [--store PATH] (--email-hash H | --user-agent-id U |
                                       --compartment-id C --user-account-id A)
    profile-import versions | rollback --to N | prune --keep N   [--store PATH]

Exit status: 0 done (SUCCEEDED, SUCCEEDED_WITH_ERRORS, ALREADY_APPLIED; a
profile found), 1 failed (FAILED; no such profile), 2 bad usage or unreadable
input, 130 interrupted (Ctrl-C, SIGTERM). Errors are one clear line on stderr,
cause first, never a traceback or a usage dump.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from profile_import import __version__
from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES
from profile_import.core.identifiers import Identifier, normalise_value
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES
from profile_import.stores import DEFAULT_STORE, StoreError, open_store

from . import logs
from .local_worker import VERBOSE_ENV, stop_workers

PROG = "profile-import"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STATUS = """exit status:
  0    done: SUCCEEDED, SUCCEEDED_WITH_ERRORS or ALREADY_APPLIED (get: the profile was found)
  1    failed: FAILED, the store is unchanged (get: no such profile; a damaged or missing store)
  2    bad usage or an unreadable input: nothing ran
  130  interrupted (Ctrl-C, SIGTERM): the store is unchanged"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (cause first) rather than a usage dump."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)


def _subcommand(commands: Any, name: str, help: str, description: str | None = None) -> Any:
    return commands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


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
    parser = ArgumentParser(
        prog=PROG,
        description="Import user profile commands (NDJSON) into a profile store.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
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
        help="files or globs, applied in the order given (.gz .bz2 .zst are decompressed)",
    )
    _store_option(run)
    run.add_argument(
        "--rejects",
        metavar="FILE",
        help="where rejected lines go, as NDJSON "
        "(default: ./profile-import-EXECUTION.rejects.ndjson, only if there are rejects)",
    )
    run.add_argument(
        "--report", metavar="FILE", help="where the JSON report goes (default: stdout)"
    )
    run.add_argument(
        "--default-compartment-id",
        metavar="ID",
        help="the compartment of lines that give a user_account_id alone",
    )
    run.add_argument(
        "--max-rejects",
        type=_non_negative_int,
        metavar="N",
        help="fail the run, publishing nothing, if more than N lines are rejected",
    )
    run.add_argument(
        "--max-reject-ratio",
        type=_ratio,
        metavar="R",
        help="fail the run, publishing nothing, if rejected / non-blank lines exceeds R (0 to 1)",
    )
    run.add_argument(
        "--allow-reapply",
        action="store_true",
        help="apply an import this store has already applied",
    )
    run.add_argument(
        "--redact-rejects",
        action="store_true",
        help="write rejects without the line and messages without values from the data",
    )
    run.add_argument(
        "--profile-schema",
        metavar="FILE",
        help="a JSON Schema (Draft 2020-12) every UPSERT's user_profile must satisfy",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check and count everything, write nothing to the store",
    )
    run.add_argument(
        "--lock-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run on the same store (default: 0, fail at once)",
    )
    run.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="N",
        help=f"reject lines longer than this (default: {DEFAULT_MAX_LINE_BYTES:,})",
    )
    run.add_argument(
        "--split-bytes",
        type=_positive_int,
        default=DEFAULT_SPLIT_BYTES,
        metavar="N",
        help="read uncompressed inputs in parts of about N bytes, one per worker task "
        f"(default: {DEFAULT_SPLIT_BYTES:,})",
    )
    run.add_argument(
        "--buckets",
        type=_positive_int,
        metavar="N",
        help="the bucket count of a new store (default: 64; an existing store keeps its own)",
    )
    run.add_argument(
        "--runner",
        help="the Beam runner: FnApiRunner (the default) or DirectRunner run here; "
        "the folder store refuses the others",
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

    export = _subcommand(commands, "export", "print every profile as NDJSON, by identifier")
    _store_option(export)

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

    versions = _subcommand(commands, "versions", "list the store's kept versions")
    _store_option(versions)

    rollback = _subcommand(commands, "rollback", "publish an older version again")
    _store_option(rollback)
    rollback.add_argument(
        "--to",
        type=_positive_int,
        required=True,
        metavar="VERSION",
        help="the version to publish again (see versions)",
    )

    prune = _subcommand(commands, "prune", "drop old versions and their files")
    _store_option(prune)
    prune.add_argument(
        "--keep",
        type=_positive_int,
        required=True,
        metavar="N",
        help="how many of the newest versions to keep",
    )
    return parser


def _fail(message: str, code: int) -> NoReturn:
    """Exits with one line on stderr: `profile-import: error: CAUSE...`."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class _Interrupt:
    """Ctrl-C and SIGTERM (what cron, Airflow and `kill` send) unwind the run
    as KeyboardInterrupt, so a staged run is discarded and the lock released."""

    signal: str | None = None  # the first one received
    quiet_threads = True

    @classmethod
    def install(cls, quiet_threads: bool) -> None:
        cls.quiet_threads = quiet_threads
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, cls.handle)

    @classmethod
    def handle(cls, signum: int, frame: object) -> None:
        if cls.signal is None:
            cls.signal = signal.Signals(signum).name
            if cls.quiet_threads:
                # Beam's threads watching the workers report their end as
                # errors; the one-line message below says what happened.
                threading.excepthook = lambda _: None
            # Beam waits for its worker processes while unwinding; they would
            # never finish without the runner, so they are stopped first.
            stop_workers()
        raise KeyboardInterrupt

    @classmethod
    def exit(cls) -> NoReturn:
        print(
            f"{PROG}: interrupted ({cls.signal or 'SIGINT'}); the store is unchanged",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED)


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    # Imported here: Beam takes a second to import, and only `run` needs it.
    from . import local
    from .execution import Execution, RunSettings

    if args.default_compartment_id is not None and not args.default_compartment_id:
        _fail("--default-compartment-id must not be empty", EXIT_USAGE)
    if args.runner:
        beam_args = [f"--runner={args.runner}", *beam_args]
    try:
        local.check_options(beam_args)
    except local.OptionError as e:
        _fail(str(e), EXIT_USAGE)
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
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
        max_line_bytes=args.max_line_bytes,
        split_bytes=args.split_bytes,
        buckets=args.buckets,
        show_progress=not args.quiet and sys.stderr.isatty(),
        beam_args=beam_args,
    )
    execution = Execution(settings)
    logs.log.info(
        "execution %s: %d input(s) into store %s",
        execution.execution_id,
        len(args.inputs),
        args.store,
    )
    outcome = execution.run()
    if _Interrupt.signal is not None and outcome.report["version"] is None:
        _Interrupt.exit()  # the pipeline failed because it was interrupted
    text = json.dumps(outcome.report, indent=2) + "\n"
    exit_code = outcome.exit_code
    try:
        if args.report:
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as e:
        # Checked before the run; still, the report is never lost: stdout has it.
        print(f"profile-import: cannot write the report to {args.report}: {e}", file=sys.stderr)
        args.report = None
        exit_code = exit_code or EXIT_FAILED
    if not args.report:
        sys.stdout.write(text)
    report = outcome.report
    if outcome.exit_code:
        # Cause first; the counts are in the report.
        cause = report.get("failure") or report["message"]
        unchanged = "; the store is unchanged" if outcome.exit_code == EXIT_FAILED else ""
        rejects = f"; rejects in {report['rejects_file']}" if report.get("rejects_file") else ""
        print(f"{PROG}: error: {cause}{unchanged}{rejects}", file=sys.stderr)
    elif not args.quiet:
        print(f"{PROG}: {report['message']}", file=sys.stderr)
        if report.get("rejects_file"):
            print(f"{PROG}: rejects in {report['rejects_file']}", file=sys.stderr)
    return exit_code


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


def main(argv: Sequence[str] | None = None) -> int:
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
    # `run` logs its phases with their times (INFO) unless --quiet; Beam's own
    # log, worker start-up and whole worker tracebacks, is noise for a
    # command-line user, who gets our one-line summary instead: --verbose shows it.
    verbose = args.command == "run" and args.verbose
    quiet = args.command != "run" or args.quiet
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # for the worker processes too
    logs.setup(sys.stderr, level=logging.WARNING if quiet else logging.INFO, beam_log=verbose)
    _Interrupt.install(quiet_threads=not verbose)
    try:
        if args.command == "run":
            return _run(args, extra)
        store = open_store(args.store)
        if not store.exists():
            # A mistyped path must not read as an empty store.
            _fail(f"no profile store at {args.store}", EXIT_FAILED)
        if args.command == "export":
            _write_records(store.export())
            return EXIT_OK
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
    except StoreError as e:
        _fail(str(e), EXIT_FAILED)
    except OSError as e:
        _fail(f"store {args.store}: {e}", EXIT_FAILED)
    except KeyboardInterrupt:
        _Interrupt.exit()


if __name__ == "__main__":
    sys.exit(main())
