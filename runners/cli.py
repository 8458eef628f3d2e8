"""`profile-import`: the command line.

    profile-import run [options] [beam options] INPUT...
    profile-import export [--store PATH] [--format ndjson|parquet] [--output FILE]
    profile-import changes --since V [--store PATH] [--format ndjson|parquet] [--output FILE]
    profile-import verify [--store PATH] [--version N]
    profile-import get [--store PATH] (--email-hash H | --user-agent-id U |
                                       --compartment-id C --user-account-id A)
    profile-import get [--store PATH] --ids FILE [--properties a,b.c]
    profile-import list [--store PATH] [--where 'PATH OP JSON' ...] [--properties a,b.c]
                        [--limit N] [--cursor C]
    profile-import versions | rollback --to N | prune --keep N | compact   [--store PATH]

Exit status: 0 done (SUCCEEDED, SUCCEEDED_WITH_ERRORS, ALREADY_APPLIED; a
profile found; a sound store), 1 failed (FAILED; no such profile; a damaged
store), 2 bad usage or unreadable input, 130 interrupted (Ctrl-C, SIGTERM).
Errors are one clear line on stderr, cause first, never a traceback or a
usage dump.
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
from typing import TYPE_CHECKING, Any, NoReturn

from profile_import.core.identifiers import IDENTIFIER_FIELDS, Identifier
from profile_import.core.ids import AskedIds, IdsError, read_ids
from profile_import.stores import (
    StoreError,
    StoreReader,
    history_of,
    open_store,
)
from profile_import.transforms.steps.outputs import Output, OutputError

from . import logs, read_commands
from .cli_arguments import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    ArgumentParser,
    build_parser,
    fail,
)
from .local_worker import VERBOSE_ENV, stop_workers

__all__ = ["ArgumentParser", "build_parser", "main"]

if TYPE_CHECKING:
    from .execution import Execution, RunResult


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
    from .execution import Execution, RunSettings, UsageError

    if args.runner:
        beam_args = [f"--runner={args.runner}", *beam_args]
    settings = RunSettings.from_options(
        args,
        beam_args,
        inputs=args.inputs,
        show_progress=not args.quiet and sys.stderr.isatty(),
        own_process=True,
    )
    try:
        settings.check()
    except UsageError as e:
        fail(str(e), EXIT_USAGE)
    execution = Execution(settings)
    logs.log.info(
        "execution %s: %d input(s) into store %s",
        execution.execution_id,
        len(args.inputs),
        args.store,
    )
    try:
        outcome = execution.run()
    except KeyboardInterrupt:
        outcome = execution.interrupted(_Interrupt.signal or "SIGINT")
    if _Interrupt.signal is not None and outcome.report["version"] is None:
        # Stopped before it published (the pipeline failed because it was
        # interrupted): the report says so, never a run still under way.
        _write_report(execution, execution.interrupted(_Interrupt.signal))
        _Interrupt.exit()
    _write_report(execution, outcome)
    report = outcome.report
    if outcome.exit_code:
        print(f"{PROG}: error: {outcome.error_line()}", file=sys.stderr)
    elif not args.quiet:
        print(f"{PROG}: {report['message']}", file=sys.stderr)
        if report.get("rejects_file"):
            print(f"{PROG}: rejects in {report['rejects_file']}", file=sys.stderr)
        if report.get("changes_file"):
            of = report["changes_version"]
            what = "would make" if of is None else f"of version {of}"
            print(f"{PROG}: changes {what} in {report['changes_file']}", file=sys.stderr)
    return outcome.exit_code


def _write_report(execution: Execution, outcome: RunResult) -> None:
    """The report at --report (whole or not at all), unless the run's final step wrote it."""
    if outcome.report_written:
        return
    text = (json.dumps(outcome.report, indent=2) + "\n").encode()
    try:
        execution.report_output.write(text)
    except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
        # Proven writable before the run, yet failing now (a full disk): the
        # run's outcome stands, published or not, and the report goes to
        # stdout instead, so a retry does not fail forever on a done import.
        print(
            f"{PROG}: warning: cannot write the report to "
            f"{execution.report_output}: {e}; it follows on standard output",
            file=sys.stderr,
        )
        sys.stdout.buffer.write(text)
        sys.stdout.flush()


def _identifier(args: argparse.Namespace) -> Identifier:
    asked = Identifier.asked(
        email_hash=args.email_hash,
        user_agent_id=args.user_agent_id,
        compartment_id=args.compartment_id,
        user_account_id=args.user_account_id,
    )
    if asked is None:
        fail(
            "get needs exactly one identifier: --email-hash H, --user-agent-id U, "
            "or --compartment-id C with --user-account-id A",
            EXIT_USAGE,
        )
    return asked


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
        fail(f"--ids {path}: {e}", EXIT_USAGE)
    except OSError as e:
        fail(f"--ids {path}: cannot be read: {e.strerror or e}", EXIT_USAGE)


def _get_many(store: StoreReader, args: argparse.Namespace) -> int:
    if any(getattr(args, name) is not None for name in IDENTIFIER_FIELDS):
        fail("get: --ids cannot be combined with a single identifier", EXIT_USAGE)
    batch = read_commands.Batch(store, _read_ids(args.ids), args.properties)
    _write_records(batch)
    print(json.dumps(batch.info), file=sys.stderr)
    return EXIT_OK


def _list(store: StoreReader, args: argparse.Namespace) -> int:
    page = read_commands.Page(store, args.where, args.properties, args.limit, args.cursor)
    _write_records(page)
    print(json.dumps(page.info.as_json()), file=sys.stderr)
    return EXIT_OK


def _file_output(args: argparse.Namespace) -> Output | None:
    """Where `export` or `changes` writes (None: standard output), proven
    writable before the store is read: any location a run writes its outputs
    to (a path, file://, s3://, gs://), written whole or not at all."""
    if args.output in (None, "-"):
        if args.format == "parquet":
            fail(f"{args.command} --format parquet needs --output FILE", EXIT_USAGE)
        return None
    output = Output(f"{args.command} --output", args.output)
    try:
        output.check()
    except OutputError as e:
        fail(str(e), EXIT_USAGE)
    return output


def _export(store: StoreReader, args: argparse.Namespace, output: Output | None) -> int:
    from . import export as exports

    if output is None:
        _write_records(store.export())
        return EXIT_OK
    with output.open() as out:
        if args.format == "parquet":
            exports.write_parquet(store.export(), out)
        else:
            exports.write_ndjson(store.export(), out)
    return EXIT_OK


def _changes(store: StoreReader, args: argparse.Namespace, output: Output | None) -> int:
    from . import changes, export

    feed = changes.Feed(store, args.since)  # read whole before anything is written
    if output is None:
        _write_records(feed)
    else:
        with output.open() as out:
            if args.format == "parquet":
                changes.write_parquet(feed, out)
            else:
                export.write_ndjson(feed, out)
    print(json.dumps(feed.info), file=sys.stderr)
    return EXIT_OK


def _verify(store: StoreReader, number: int | None) -> int:
    result = store.verify(number)
    for line in (*result.problems, *result.unchecked):
        print(line)
    what = f"version {result.version}: {result.files:,} files, {result.lines:,} lines"
    if result.sound:
        print(f"{what}: sound (line counts, sizes, checksums, keys and records as recorded)")
        return EXIT_OK
    print(f"{what}: DAMAGED, {len(result.problems):,} problem(s)")
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    stray = [a for a in extra if not a.startswith("--")]
    if stray:
        parser.error(
            f"unrecognized arguments: {' '.join(extra)} (options run does not know go to "
            "Beam, written --name=value, before or after the inputs)"
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
        output = _file_output(args) if args.command in ("export", "changes") else None
        store = open_store(args.store)
        if not store.exists():
            # A mistyped path must not read as an empty store.
            fail(f"no profile store at {args.store}", EXIT_FAILED)
        if args.command == "export":
            return _export(store, args, output)
        if args.command == "verify":
            return _verify(store, args.version_number)
        if args.command == "changes":
            return _changes(store, args, output)
        if args.command == "list":
            return _list(store, args)
        if args.command == "get" and args.ids is not None:
            return _get_many(store, args)
        if args.command == "get" and args.properties is not None:
            fail("get: --properties goes with --ids", EXIT_USAGE)
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
                version = history_of(store, "rollback").rollback(args.to)
                again = f"version {args.to} published again as version {version.number}"
                print(f"profile-import: {again}", file=sys.stderr)
            elif args.command == "compact":
                compacted = history_of(store, "compact").compact()
                if compacted is None:
                    print("profile-import: nothing to compact", file=sys.stderr)
                else:
                    buckets = compacted.execution.get("compacted_buckets")
                    done = f"{buckets} bucket(s) compacted into version {compacted.number}"
                    print(f"profile-import: {done}", file=sys.stderr)
            else:
                dropped = store.prune(args.keep)
                print(f"profile-import: pruned {len(dropped)} version(s)", file=sys.stderr)
        return EXIT_OK
    except read_commands.ReadUsageError as e:
        fail(str(e), EXIT_USAGE)
    except StoreError as e:
        fail(str(e), EXIT_FAILED)
    except OSError as e:
        fail(f"store {args.store}: {e}", EXIT_FAILED)
    except KeyboardInterrupt:
        _Interrupt.exit()


if __name__ == "__main__":
    sys.exit(main())
