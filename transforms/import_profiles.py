"""ImportProfiles: the import as one Beam composite, inside a pipeline of one's own.

    CommandLine(source, line_number, text) ──GroupBySource──► each source, its lines in order
        ──HashSources──► content hashes ──DecideInputs──► decided (the store's ledger)
        ──CheckLines──► (bucket, batch), rejects, counts ──ApplyCommands──► staged buckets
        ──WriteRejects──► reject files ─────────────────────────────────────┐
                                                            CommitImport ◄─┘ the report

A source is what the command line calls an input: its lines, in line-number
order and each ended by a newline, are its content, whose sha256 is its
identity in the store's ledger (SPEC §4), so a source applied before is
skipped as a file would be. Sources apply in the order of their names, as
a glob's files do; each source's lines are grouped on one worker. The
steps after the grouping are the pipeline's own (`pipelines.beam_pipeline`):
the same check, apply, rejects and final step, publishing all or nothing and
writing the report where asked. The composite stages its run in the store
itself when the pipeline is built (as the command line's launcher does), and
its final step publishes with a compare-and-swap on the version it started
from: it holds no lock, like a job nobody waits for.

No `--profile-schema` or `--properties-file` here: a pipeline that needs them
runs the command line or `profile_import.run_import`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms import combiners

from profile_import.core import clock
from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES, CheckSettings
from profile_import.core.locations import is_remote
from profile_import.inputs.content import ContentHash
from profile_import.inputs.lines import Line
from profile_import.inputs.plan import InputFile, InputSplit
from profile_import.pipelines.job import ImportJob, semantics_of
from profile_import.stores import open_store

from .apply_commands import ApplyCommands
from .commit_import import CommitImport
from .decide_inputs import DecideInputs
from .parse_commands import COUNTS, REJECTS, ParseSplitFn
from .steps.decisions import Decided
from .steps.finalize import Finalizer, RunContext
from .write_rejects import WriteRejects

_UTF8_BOM = b"\xef\xbb\xbf"


class CommandLine(NamedTuple):
    """One command line of a source (a file, a topic, a table: any name),
    with its 1-based number there; `text` with or without its line end."""

    source: str
    line_number: int
    text: str | bytes


class Source(NamedTuple):
    """A source as an input of the run: its listing, its lines in order
    without their line ends, and their numbers."""

    file: InputFile
    numbers: tuple[int, ...]
    lines: tuple[bytes, ...]


def as_line(number: int, text: str | bytes, max_line_bytes: int) -> Line:
    """A given line as the reader gives a file's (`inputs.lines`): without its
    line end or a first line's byte-order mark, blank if only white space,
    its head kept if too long."""
    content = _without_end(text)
    if number == 1:
        content = content.removeprefix(_UTF8_BOM)
    if not content.strip():
        return Line(number, b"", 0)
    return Line(number, content[:max_line_bytes], len(content))


def _without_end(text: str | bytes) -> bytes:
    content = text.encode() if isinstance(text, str) else bytes(text)
    return content.removesuffix(b"\n").removesuffix(b"\r")


def _source(element: tuple[str, Iterable[CommandLine]], names: list[str]) -> Source:
    name, lines = element
    ordered = sorted(lines, key=lambda line: line.line_number)
    content = tuple(_without_end(line.text) for line in ordered)
    size = sum(len(line) + 1 for line in content)
    numbers = tuple(line.line_number for line in ordered)
    return Source(InputFile(names.index(name), name, size, None), numbers, content)


def _hash(source: Source) -> ContentHash:
    """A source's identity: the sha256 of its lines, each ended by a newline."""
    digest = hashlib.sha256()
    for line in source.lines:
        digest.update(line)
        digest.update(b"\n")
    size = source.file.size or 0
    return ContentHash(source.file.index, digest.hexdigest(), size, len(source.lines))


class CheckSourceFn(ParseSplitFn):
    """The pipeline's check step (`ParseSplitFn`) over a source's given lines."""

    def process(self, source: Source, decided: Decided | None = None) -> list[Any]:  # type: ignore[override]
        file = source.file
        if decided is not None and file.index not in decided.applied:
            return []  # a source the store applied before (or given twice): not checked
        split = InputSplit(file.index, file.path, 0, None, 1, None)
        max_line_bytes = self._settings.max_line_bytes
        lines = [
            as_line(number, text, max_line_bytes)
            for number, text in zip(source.numbers, source.lines, strict=True)
        ]
        return list(self._parse(split, lines))


Lines = beam.pvalue.PCollection[CommandLine]
Reports = beam.pvalue.PCollection[dict[str, Any]]


class ImportProfiles(beam.PTransform[Lines, Reports]):
    """Imports command lines into a profile store; one element out: the report.

    `store`: a store URL as the command line takes it. `rejects`, `report`,
    `changes`: where the rejects, the report and the run's changes (SPEC §6)
    go (None: the rejects, if any, next to the working folder; the report only
    as the output element; no changes file). `dry_run`: check and count, write
    the changes the run would make, publish nothing. The other settings are
    the command line's options of the same names.
    """

    def __init__(
        self,
        store: str,
        *,
        rejects: str | None = None,
        report: str | None = None,
        changes: str | None = None,
        dry_run: bool = False,
        default_compartment_id: str | None = None,
        allow_reapply: bool = False,
        max_rejects: int | None = None,
        max_reject_ratio: float | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        redact_rejects: bool = False,
        buckets: int | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.rejects = rejects
        self.report = report
        self.changes = changes
        self.dry_run = dry_run
        self.default_compartment_id = default_compartment_id
        self.allow_reapply = allow_reapply
        self.max_rejects = max_rejects
        self.max_reject_ratio = max_reject_ratio
        self.max_line_bytes = max_line_bytes
        self.redact_rejects = redact_rejects
        self.buckets = buckets

    def expand(self, lines: Lines) -> Reports:
        job = self.stage(type(lines.pipeline.runner).__name__)
        finalizer = job.finalizer
        by_source = lines | "GroupBySource" >> beam.GroupBy(lambda line: line.source)
        names = (
            by_source
            | "SourceNames" >> beam.Keys()
            | "AllNames" >> combiners.ToList()
            | "InOrder" >> beam.Map(sorted)
        )
        sources = by_source | "NumberSources" >> beam.Map(
            _source, names=beam.pvalue.AsSingleton(names)
        )
        inputs = sources | "SourceInputs" >> beam.Map(lambda source: source.file)
        decided = (
            sources
            | "HashSources" >> beam.Map(_hash)
            | "DecideInputs"
            >> DecideInputs(
                finalizer.store, finalizer.parent, job.semantics, job.allow_reapply, None
            )
        )
        parsed = sources | "CheckLines" >> beam.ParDo(
            CheckSourceFn(job.check, job.buckets), decided=beam.pvalue.AsSingleton(decided)
        ).with_outputs(REJECTS, COUNTS, main="commands")
        sink = finalizer.staging.sink if finalizer.staging is not None else None
        buckets = parsed.commands | "ApplyCommands" >> ApplyCommands(
            job.source, sink, finalizer.ctx.started_at, changes_dir=finalizer.ctx.changes_dir
        )
        reject_files = parsed[REJECTS] | "WriteRejects" >> WriteRejects(job.rejects_dir)
        report: Reports = lines.pipeline | "CommitImport" >> CommitImport(
            finalizer, decided, parsed[COUNTS], buckets, reject_files, inputs
        )
        return report

    def stage(self, runner: str) -> ImportJob:
        """Opens the store and stages the run in it, as the launcher does."""
        from profile_import.runners.execution import new_execution_id

        started = clock.now()
        execution_id = new_execution_id(started)
        store = open_store(self.store, buckets=self.buckets)
        parent = store.current() if store.exists() else None
        # A dry run stages nothing: its work folder (the rejects of each
        # source, the changes it would make) is a temporary one here.
        staging = None if self.dry_run else store.begin(execution_id, parent)
        work_dir = (
            staging.work_dir
            if staging is not None
            else tempfile.mkdtemp(prefix=f"profile-import-{execution_id}-")
        )
        check = CheckSettings(
            default_compartment_id=self.default_compartment_id,
            max_line_bytes=self.max_line_bytes,
            redact=self.redact_rejects,
            holds_nul=store.holds_nul,
        )
        ctx = RunContext(
            execution_id=execution_id,
            launched_at=clock.iso(started),
            started_at=clock.iso(started),
            runner=runner,
            workers=None,
            store_url=self.store,
            dry_run=self.dry_run,
            inputs=(),  # known as they come: the final step is given them
            max_rejects=self.max_rejects,
            max_reject_ratio=self.max_reject_ratio,
            rejects_location=self.rejects,
            default_rejects=os.path.abspath(f"profile-import-{execution_id}.rejects.ndjson"),
            report_location=self.report,
            changes_location=self.changes,
            # Beside the work folder, which a publish removes before the final
            # step writes the changes; the final step removes this one.
            changes_dir=f"{work_dir}-changes" if self.changes is not None else None,
        )
        job = ImportJob(
            finalizer=Finalizer(ctx, store, parent, staging),
            check=check,
            semantics=semantics_of(check, None),
            allow_reapply=self.allow_reapply,
            buckets=store.buckets,
            source=staging.source if staging is not None else store.source(parent),
            work_dir=work_dir,
        )
        if not is_remote(job.rejects_dir):
            os.makedirs(job.rejects_dir, exist_ok=True)
        return job
