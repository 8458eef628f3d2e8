"""The Python API: an import run from a notebook, an Airflow `PythonOperator`
or a Dagster asset, without a shell.

    import profile_import

    report = profile_import.run_import(["day.ndjson"], store="profile-store", max_rejects=100)
    report.status, report.counts.accepted, report.version

`run_import` is `profile-import run`: the same options (keyword arguments
named as the command line's, `dry_run` for `--dry-run`), the same checks, the
same lock on the store, the same engines and the same report. It differs in
what a library must not do: it prints nothing (no progress line, no summary,
no report on standard output) and leaves logging alone (its phases go to the
`profile_import` logger, where the application's logging sends them, and
nowhere by default). A run that does not succeed raises `ProfileImportError`,
the one exception this API raises, with the command's exit status.

`get_profile` and `export_profiles` read the store's current version as
`profile-import get` and `export` do, as dicts.

Cheap to import: the run's modules (and Beam, for a run that uses it) are
imported when a run starts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from profile_import.core.report import COUNT_NAMES, Status

if TYPE_CHECKING:
    from profile_import.runners.execution import Execution, RunResult
    from profile_import.runners.options import Option
    from profile_import.stores import StoreReader

__all__ = [
    "Counts",
    "ProfileImportError",
    "Report",
    "Status",
    "export_profiles",
    "get_profile",
    "run_import",
]

# A library logs, and the application decides where it goes: without this
# handler, logging's last resort would print the project's warnings on stderr.
logging.getLogger("profile_import").addHandler(logging.NullHandler())

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Counts:
    """The report's `counts`: `lines = blank + accepted + rejected` and
    `accepted = upserts + deletes`; a FAILED run changed no profile."""

    lines: int
    blank: int
    accepted: int
    rejected: int
    upserts: int
    deletes: int
    profiles_created: int
    profiles_updated: int
    profiles_unchanged: int
    profiles_deleted: int
    deletes_missing: int


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True)
class Report:
    """The report of a run (README, "The report"), typed.

    `to_dict()` is the report as JSON objects hold it, as `--report` writes it.
    """

    execution_id: str
    status: Status
    store: str
    inputs: tuple[Mapping[str, Any], ...]
    counts: Counts
    rejects_by_code: Mapping[str, int]
    rejects_file: str | None
    # With `changes=`: where the run's changes are, the version they belong
    # to (None in a dry run), how many; why they could not be written.
    changes_file: str | None
    changes_version: int | None
    changes_written: int | None
    changes_error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    launched_at: datetime | None
    duration_seconds: float | None
    runner: str
    workers: int | None
    dry_run: bool
    version: int | None
    parent_version: int | None
    fingerprint: str | None
    failure: str | None
    already_applied: tuple[Mapping[str, Any], ...]
    errors: bool
    message: str
    data: tuple[str, ...]
    _raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> Report:
        """The typed report of a report's JSON object."""
        raw = copy.deepcopy(dict(report))
        return cls(
            execution_id=raw["execution_id"],
            status=Status(raw["status"]),
            store=raw["store"],
            inputs=tuple(MappingProxyType(entry) for entry in raw["inputs"]),
            counts=Counts(**{name: raw["counts"][name] for name in COUNT_NAMES}),
            rejects_by_code=MappingProxyType(raw["rejects_by_code"]),
            rejects_file=raw.get("rejects_file"),
            changes_file=raw.get("changes_file"),
            changes_version=raw.get("changes_version"),
            changes_written=raw.get("changes_written"),
            changes_error=raw.get("changes_error"),
            started_at=_time(raw.get("started_at")),
            finished_at=_time(raw.get("finished_at")),
            launched_at=_time(raw.get("launched_at")),
            duration_seconds=raw.get("duration_seconds"),
            runner=raw["runner"],
            workers=raw.get("workers"),
            dry_run=bool(raw.get("dry_run")),
            version=raw.get("version"),
            parent_version=raw.get("parent_version"),
            fingerprint=raw.get("fingerprint"),
            failure=raw.get("failure"),
            already_applied=tuple(MappingProxyType(e) for e in raw.get("already_applied", ())),
            errors=raw["errors"],
            message=raw["message"],
            data=tuple(raw["data"]),
            _raw=MappingProxyType(raw),
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON holds it (a copy: changing it changes nothing here)."""
        return copy.deepcopy(dict(self._raw))


class ProfileImportError(Exception):
    """A run that did not succeed, in one line, cause first.

    `exit_code` is the command line's exit status for the same run:
    `USAGE` (2) for bad arguments or an unreadable input, nothing ran;
    `FAILED` (1) for a run that failed (over `max_rejects`, a store in use
    by another run, a damaged store...), the store unchanged. `report` is
    the run's FAILED report, None when the arguments were refused before a
    run began.
    """

    USAGE: ClassVar[int] = 2
    FAILED: ClassVar[int] = 1

    def __init__(self, message: str, *, exit_code: int, report: Report | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


def _usage(message: str) -> ProfileImportError:
    return ProfileImportError(message, exit_code=ProfileImportError.USAGE)


def _path(name: str, value: object) -> str:
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise _usage(f"{name}={value!r}: must be a path or URL")


def _optional_path(name: str, value: object) -> str | None:
    return None if value is None else _path(name, value)


def _inputs(value: object) -> list[str]:
    if isinstance(value, str | os.PathLike):
        return [_path("inputs", value)]
    if not isinstance(value, Iterable):
        raise _usage(f"inputs={value!r}: must be a path or URL, or a list of them")
    listed = [_path("inputs", one) for one in value]
    if not listed:
        raise _usage("inputs: no input given")
    return listed


def _checked(name: str, value: object, expected: tuple[type, ...], what: str) -> None:
    # bool is an int to Python, never a count or a ratio here.
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise _usage(f"{name}={value!r}: must be {what}")


# Each keyword of run_import, by the name of its option in `runners.options`.
_OPTION_NAMES = {"dry_run": "import_dry_run"}


def _option_value(keyword: str, option: Option, value: object) -> object:
    """`value` checked by the type of its keyword, then by the rule of its
    option, as the command line applies it (a count given as 2.5 is refused
    there, by its text), with its message."""
    if option.flag:
        _checked(keyword, value, (bool,), "True or False")
        return value
    if option.type is None:
        _checked(keyword, value, (str,), "a string")
        return value
    _checked(keyword, value, (int, float), "a number")
    try:
        return option.type(str(value))
    except argparse.ArgumentTypeError as e:
        raise _usage(f"{keyword}={value!r}: {e}") from None


def _option_values(given: Mapping[str, object]) -> argparse.Namespace:
    """The options of `profile-import run` as its parser gives them: every
    option's default (so an option added there has its default here), then
    the keywords given."""
    from profile_import.runners.options import OPTIONS

    by_name = {option.name: option for option in OPTIONS}
    values = {option.name: False if option.flag else option.default for option in OPTIONS}
    for keyword, value in given.items():
        option = by_name[_OPTION_NAMES.get(keyword, keyword)]
        if value is not None:
            values[option.name] = _option_value(keyword, option, value)
    return argparse.Namespace(**values)


def run_import(
    inputs: PathLike | Iterable[PathLike],
    *,
    store: PathLike,
    rejects: PathLike | None = None,
    report: PathLike | None = None,
    changes: PathLike | None = None,
    default_compartment_id: str | None = None,
    max_rejects: int | None = None,
    max_reject_ratio: float | None = None,
    allow_reapply: bool = False,
    redact_rejects: bool = False,
    profile_schema: PathLike | None = None,
    properties_file: PathLike | None = None,
    allow_undeclared_properties: bool = False,
    dry_run: bool = False,
    lock_timeout: float = 0.0,
    max_line_bytes: int | None = None,
    split_bytes: int | None = None,
    buckets: int | None = None,
    runner: str | None = None,
    beam_args: Sequence[str] = (),
) -> Report:
    """Applies import files to a store, as `profile-import run` does; returns its report.

    `inputs`: a path, glob or URL, or a list of them, applied in that order.
    The keywords are the options of `profile-import run` (see its --help):
    `store` (a folder, `sqlite://`, `postgresql://`, `s3://` or `gs://`),
    `rejects`, `report` and `changes` (where to write them; the report is
    also returned), `max_line_bytes` and `split_bytes` (None: the command's
    defaults), `runner` and `beam_args` (Beam options, `--name=value`).

    Returns the report of a run that succeeded: SUCCEEDED,
    SUCCEEDED_WITH_ERRORS or ALREADY_APPLIED. Raises ProfileImportError,
    with `exit_code` 2 (bad arguments, nothing ran) or 1 (a FAILED run, the
    store unchanged; its report in `.report`). Interrupted (KeyboardInterrupt),
    without Beam or on Beam's local runner (whose worker processes end with
    the run), a run publishes nothing, writes its FAILED report and releases
    the store; the KeyboardInterrupt goes on to the caller.
    """
    from profile_import.runners.execution import Execution, RunSettings, UsageError

    options = _option_values(
        {
            "store": _path("store", store),
            "rejects": _optional_path("rejects", rejects),
            "report": _optional_path("report", report),
            "changes": _optional_path("changes", changes),
            "default_compartment_id": default_compartment_id,
            "max_rejects": max_rejects,
            "max_reject_ratio": max_reject_ratio,
            "allow_reapply": allow_reapply,
            "redact_rejects": redact_rejects,
            "profile_schema": _optional_path("profile_schema", profile_schema),
            "properties_file": _optional_path("properties_file", properties_file),
            "allow_undeclared_properties": allow_undeclared_properties,
            "dry_run": dry_run,
            "lock_timeout": lock_timeout,
            "max_line_bytes": max_line_bytes,
            "split_bytes": split_bytes,
            "buckets": buckets,
        }
    )
    for name in ("rejects", "report", "changes"):
        if getattr(options, name) == "-":
            raise _usage(f"{name}='-': the Python API writes nothing to standard output")
    if isinstance(beam_args, str) or not all(
        isinstance(arg, str) and arg.startswith("--") for arg in beam_args
    ):
        raise _usage(f"beam_args={beam_args!r}: must be a list of '--name=value' Beam options")
    args = list(beam_args)
    if runner is not None:
        _checked("runner", runner, (str,), "a runner's name")
        args = [f"--runner={runner}", *args]
    settings = RunSettings.from_options(options, args, inputs=_inputs(inputs))
    try:
        settings.check()
    except UsageError as e:
        raise _usage(str(e)) from e
    execution = Execution(settings)
    try:
        outcome = execution.run()
    except KeyboardInterrupt:
        # Stopped before it published: the report says so, as the command's does.
        _write_report(execution, execution.interrupted("SIGINT"))
        raise
    _write_report(execution, outcome)
    typed = Report.from_dict(outcome.report)
    if outcome.exit_code:
        raise ProfileImportError(outcome.error_line(), exit_code=outcome.exit_code, report=typed)
    return typed


def _write_report(execution: Execution, outcome: RunResult) -> None:
    """The report at `report` (whole or not at all), unless the run's final
    step wrote it; never on standard output. One that cannot be written
    leaves the run's outcome as it is, and a warning in the log."""
    output = execution.report_output
    if outcome.report_written or output.is_stdout:
        return
    import json

    text = (json.dumps(outcome.report, indent=2) + "\n").encode()
    try:
        output.write(text)
    except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
        logging.getLogger("profile_import").warning("cannot write the report to %s: %s", output, e)


def get_profile(
    store: PathLike,
    *,
    email_hash: str | None = None,
    user_agent_id: str | None = None,
    compartment_id: str | None = None,
    user_account_id: str | None = None,
) -> dict[str, Any] | None:
    """The profile with this identifier in the store's current version, as
    `profile-import get` prints it (its export record); None when there is
    none. Give one identifier: `email_hash`, `user_agent_id`, or
    `compartment_id` with `user_account_id`."""
    from profile_import.core.identifiers import Identifier

    identifier = Identifier.asked(
        email_hash=email_hash,
        user_agent_id=user_agent_id,
        compartment_id=compartment_id,
        user_account_id=user_account_id,
    )
    if identifier is None:
        raise _usage(
            "get_profile needs exactly one identifier: email_hash=, user_agent_id=, "
            "or compartment_id= with user_account_id="
        )
    location = _path("store", store)
    with _store_errors(location):
        record = _existing_store(location).get(identifier)
    return None if record is None else _record(record)


def export_profiles(store: PathLike) -> Iterator[dict[str, Any]]:
    """Every profile of the store's current version, in the order of their
    identifiers, as `profile-import export` writes them (export records),
    read as they are iterated. A missing store raises here; a damaged one,
    when the iteration reaches the damage."""
    location = _path("store", store)
    with _store_errors(location):
        opened = _existing_store(location)
    return _exported(opened, location)


def _exported(opened: StoreReader, location: str) -> Iterator[dict[str, Any]]:
    with _store_errors(location):
        for record in opened.export():
            yield _record(record)


def _record(record: bytes) -> dict[str, Any]:
    import orjson

    parsed: dict[str, Any] = orjson.loads(record)
    return parsed


def _existing_store(location: str) -> StoreReader:
    from profile_import.stores import open_store

    opened = open_store(location)
    if not opened.exists():
        # A mistyped path must not read as an empty store.
        raise ProfileImportError(
            f"no profile store at {location}", exit_code=ProfileImportError.FAILED
        )
    return opened


@contextlib.contextmanager
def _store_errors(location: str) -> Iterator[None]:
    """A store that cannot be read, as the command line says it (exit status 1)."""
    from profile_import.stores import StoreError

    try:
        yield
    except StoreError as e:
        raise ProfileImportError(str(e), exit_code=ProfileImportError.FAILED) from e
    except OSError as e:
        raise ProfileImportError(
            f"store {location}: {e}", exit_code=ProfileImportError.FAILED
        ) from e
