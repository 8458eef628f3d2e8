"""What a run was asked to do: the settings of one `profile-import run`, from
the command line, the Python API or a Flex Template, checked before anything
runs (`RunSettings.check`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property

from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES
from profile_import.core.locations import Location, LocationError
from profile_import.core.locations import parse as parse_location
from profile_import.inputs import plan as input_plan
from profile_import.transforms.steps import outputs
from profile_import.transforms.steps.outputs import OutputError

from . import runner_choice
from .options import split_inputs


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2, nothing ran."""


@dataclass
class RunSettings:
    inputs: list[str]
    store: str
    rejects_path: str | None = None
    report_path: str | None = None
    changes_path: str | None = None
    default_compartment_id: str | None = None
    max_rejects: int | None = None
    max_reject_ratio: float | None = None
    allow_reapply: bool = False
    redact_rejects: bool = False
    profile_schema_path: str | None = None
    # --properties-file and --allow-undeclared-properties (core.properties)
    properties_path: str | None = None
    allow_undeclared_properties: bool = False
    dry_run: bool = False
    lock_timeout: float = 0.0
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    split_bytes: int = input_plan.DEFAULT_SPLIT_BYTES
    buckets: int | None = None
    show_progress: bool = False
    beam_args: list[str] = field(default_factory=list)
    # Shuffle batches through files (transforms.batches); None: on the local runner only.
    spill: bool | None = None
    # False: submit the job and return, as a Flex Template launch does; the
    # job's final step publishes and writes the report with nobody waiting.
    wait: bool = True
    # The command line's: this process runs this import and nothing else (no
    # caller's threads, no gRPC in use), so Beam's local runner may fork the
    # process that forks its workers from it (`runners/fork_server.py`).
    own_process: bool = False

    @classmethod
    def from_options(
        cls,
        options: argparse.Namespace,
        beam_args: list[str],
        *,
        inputs: list[str] | None = None,
        wait: bool = True,
        show_progress: bool = False,
        own_process: bool = False,
    ) -> RunSettings:
        """The settings from `runners.options` (the command line's or a template's)."""
        return cls(
            inputs=inputs if inputs is not None else split_inputs(options.inputs),
            store=options.store,
            rejects_path=options.rejects,
            report_path=options.report,
            changes_path=options.changes,
            default_compartment_id=options.default_compartment_id,
            max_rejects=options.max_rejects,
            max_reject_ratio=options.max_reject_ratio,
            allow_reapply=options.allow_reapply,
            redact_rejects=options.redact_rejects,
            profile_schema_path=options.profile_schema,
            properties_path=options.properties_file,
            allow_undeclared_properties=options.allow_undeclared_properties,
            dry_run=options.import_dry_run,
            lock_timeout=options.lock_timeout,
            max_line_bytes=options.max_line_bytes,
            split_bytes=options.split_bytes,
            buckets=options.buckets,
            show_progress=show_progress,
            beam_args=beam_args,
            wait=wait,
            own_process=own_process,
        )

    @cached_property
    def store_location(self) -> Location:
        """The store, parsed once (`core.locations`). Raises `UsageError`."""
        try:
            return parse_location(self.store, "store")
        except LocationError as e:
            raise UsageError(f"store {self.store}: {e}") from e

    def check(self) -> None:
        """Raises UsageError for what must be refused before an Execution is
        built: Beam would print its whole usage for a bad Beam option; a
        location no run can use is refused before anything runs."""
        if self.default_compartment_id is not None and not self.default_compartment_id:
            raise UsageError("--default-compartment-id must not be empty")
        self._check_locations()
        if runner_choice.requested(self.beam_args) is False:
            # Imported only here: Beam takes a second to import, and a small
            # import run in this process never needs it.
            from . import local

            try:
                local.check_options(self.beam_args)
            except local.OptionError as e:
                raise UsageError(str(e)) from e

    def _check_locations(self) -> None:
        """Every location named, parsed by the one parser each role uses."""
        try:
            for pattern in self.inputs:
                if pattern != input_plan.STDIN:
                    input_plan.location_of(pattern)
            for option, location in (
                ("--report", self.report_path),
                ("--rejects", self.rejects_path),
                ("--changes", self.changes_path),
            ):
                outputs.target_of(option, location)
        except (input_plan.InputError, OutputError) as e:
            raise UsageError(str(e)) from e
        self.store_location  # noqa: B018 - parsed here to refuse it now
