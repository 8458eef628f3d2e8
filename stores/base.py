"""What a profile store must offer.

The pipeline's transforms see only two small picklable objects:
- a `BucketSource`, which reads one bucket of the version the run starts from,
  as store lines (`core.records`) sorted by key;
- a `BucketSink`, which stages the changes of one bucket.
Both are opened on the workers (`open()` in `DoFn.setup`).

The rest is split by role, and each caller asks for the one it needs: a run
drives an `ImportTarget` (lock, read the current version, `begin` a staged
execution, and `commit` or `abort` it); the read commands a `StoreReader`;
rollback and compaction a `VersionHistory`, which only a store that keeps its
versions is (`Capabilities.keeps_versions`, asked by `history_of`). Every
store kind is a `ProfileStore`: an import target and a reader. A commit
publishes every bucket the run wrote, and keeps the parent's content for the
buckets it did not; nothing is visible before the commit, so a failed or killed
run leaves the store as it was.

A store never reads damage as data: what a sink writes is recorded at commit
(the folder store: each file's line count, size and crc32), a source checks
what it reads against it and raises `StoreError` on a difference, and
`verify` checks a whole version.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from profile_import.core.changes import ChangeRecord
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import Identifier
from profile_import.core.locations import Location


class StoreError(Exception):
    """A store that cannot be used as asked (locked, damaged, unknown...)."""


class StoreLocked(StoreError):
    """Another run holds the store."""


class BucketSource(abc.ABC):
    """Reads the buckets of one store version (picklable; `open` on workers).

    A run reads only the profiles its commands touch, and its sink stages only
    what changed: a database updates its rows, the folder store writes a
    delta segment."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquires what reading needs (connections); called once per worker."""

    @abc.abstractmethod
    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        """The store lines of those of `keys` (sorted) that `bucket` holds, in key order.

        Reads them in batches, never the whole bucket. Raises `StoreError`
        when what it reads is not what the version recorded.
        """


class BucketSink(abc.ABC):
    """Writes the buckets of a staged execution (picklable; `open` on workers)."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquires what writing needs; called once per worker."""

    @abc.abstractmethod
    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        """Stages the changes of `bucket`: the new store lines of its changed
        profiles and the keys of its deleted ones; and its change records
        (SPEC §6): `before` maps each of those keys to the digest of its state
        before the run (`core.changes.state_digest`; None: it was absent),
        which the commit publishes with the profiles.

        Must be idempotent: a retried bundle stages the same bucket again,
        replacing what it staged before.
        """


@dataclass(frozen=True)
class Version:
    """One published state of a store."""

    number: int
    parent: int | None
    created_at: str
    profiles: int
    execution: dict[str, Any]


@dataclass(frozen=True)
class Verification:
    """What `verify` found in one version: sound when there are no problems."""

    version: int
    files: int
    lines: int
    problems: tuple[str, ...]
    # What could not be checked, though nothing is wrong with it (a file an
    # older version recorded without its checksum).
    unchecked: tuple[str, ...] = ()

    @property
    def sound(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ChangedSince:
    """What a store read for `changes --since`: its current version, the change
    records after `since` (oldest version first), and the export records now
    of the profiles they name (those that exist)."""

    current: int
    records: list[ChangeRecord]
    now: dict[bytes, bytes]


@dataclass
class Staging:
    """A run in progress: where its results go until commit."""

    execution_id: str
    parent: Version | None
    source: BucketSource
    sink: BucketSink
    work_dir: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a store can do: declared by each store kind, asked by the launcher
    (`stores.capabilities`) rather than guessed from the store's URL."""

    # Workers on other machines (Dataflow, Flink) can read and write it: a
    # bucket or a database server can; a folder or a SQLite file here cannot.
    reachable_from_remote_workers: bool
    # Where a run's work folder (each split's reject files) lives: "store",
    # in the store's own place (its folder or bucket, beside its database
    # file), reachable as the store is; "work_root", where the launcher puts
    # it (`open_store(work_root=...)`: a folder here, or the runner's
    # temp_location for workers elsewhere).
    work_folder: Literal["store", "work_root"]
    # Earlier versions stay readable: `rollback`, `prune`, `verify --version`.
    keeps_versions: bool
    # U+0000 can be kept in a string or a property name (PostgreSQL's text and
    # jsonb cannot): otherwise the run rejects the lines that hold it.
    holds_nul: bool


class StoreKind(abc.ABC):
    """What every store is: where it is, its bucket count, what it can do."""

    url: str
    buckets: int
    # What this kind of store can do (`capabilities_at` when it depends on
    # where the store is).
    capabilities: Capabilities

    @classmethod
    def capabilities_at(cls, location: Location) -> Capabilities:
        """What a store of this kind at `location` can do, without opening it."""
        return cls.capabilities

    @property
    def holds_nul(self) -> bool:
        return self.capabilities.holds_nul

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the store has been created (a first run creates it)."""

    @abc.abstractmethod
    def current(self) -> Version | None:
        """The published version, or None when there is no store yet.

        Raises `StoreError` for a store whose pointer to it is lost: damaged,
        never empty."""


class ImportTarget(StoreKind):
    """The role a run needs: lock the store, stage an execution on top of its
    current version with the inputs its ledger has not applied, and publish
    or discard it."""

    @abc.abstractmethod
    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        """Exclusive use of the store for one run; raises `StoreLocked`."""

    @abc.abstractmethod
    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        """The ledger entries of `version` for these input fingerprints (SPEC §4):
        which of them the executions that `version` includes have applied."""

    @abc.abstractmethod
    def source(self, version: Version | None) -> BucketSource:
        """Reads the buckets of `version` (an empty source for None)."""

    @abc.abstractmethod
    def begin(self, execution_id: str, parent: Version | None) -> Staging:
        """Prepares a staged execution on top of `parent` (under the lock)."""

    @abc.abstractmethod
    def commit(
        self,
        staging: Staging,
        execution: dict[str, Any],
        profiles_delta: int,
        buckets_written: int,
        fingerprints: Sequence[str],
    ) -> Version:
        """Publishes a staged execution atomically; returns the new version.

        `buckets_written` is what the pipeline counted: a store that finds
        another number of written buckets refuses to publish. The new version
        records what each bucket the sink wrote holds. `fingerprints` are the
        inputs the execution applied: the new version's ledger holds them, with
        the parent's entries, in the same atomic step.
        """

    @abc.abstractmethod
    def abort(self, staging: Staging) -> None:
        """Discards a staged execution; never anything a published version uses."""


class StoreReader(StoreKind):
    """The role the read commands need (export, get, list, changes, versions,
    verify): the current version's profiles, or a kept version's."""

    @abc.abstractmethod
    def versions(self) -> list[Version]:
        """Every kept published version, oldest first (never one a killed run
        left unpublished)."""

    @abc.abstractmethod
    def export(self) -> Iterator[bytes]:
        """Every profile of the current version as an export record, by key."""

    @abc.abstractmethod
    def get(self, identifier: Identifier) -> bytes | None:
        """The export record of one profile, or None."""

    @abc.abstractmethod
    def version(self, number: int) -> Version | None:
        """A kept version by its number; None once pruned (or never published)."""

    @abc.abstractmethod
    def scan(
        self,
        version: Version,
        after: bytes | None = None,
        keep: Callable[[bytes], bool] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, export record) of the profiles of `version`, in key order (export's),
        from the first key > `after` (None: from the start).

        `keep`, when given, sees each record as bytes and drops those it refuses;
        a store calls it as early as it can (before merging its buckets), and must
        not read further than the caller consumes: a page stops the scan.
        Raises `StoreError` when the version's data is gone (pruned meanwhile).
        """

    @abc.abstractmethod
    def get_many(self, version: Version, keys: Collection[bytes]) -> dict[bytes, bytes]:
        """The export records of those of `keys` that `version` holds, by key.

        Reads each bucket at most once, however many keys fall in it.
        """

    @abc.abstractmethod
    def changed_since(self, since: int) -> ChangedSince:
        """The change records published after version `since` (SPEC §6), oldest
        version first, and the current export records of the profiles they
        name, read as of one version (the current one).

        Raises `StoreError` when the store cannot say what changed after
        `since`: a version not published yet, or one whose following versions'
        records are no longer kept (pruned) or were never kept.
        """

    @abc.abstractmethod
    def verify(self, number: int | None = None) -> Verification:
        """Checks every file and line of a published version (default: the
        current one); raises `StoreError` if there is no such version."""


class VersionHistory(StoreKind):
    """The role of a store that keeps its earlier versions
    (`Capabilities.keeps_versions`): publish one again, fold the changes
    runs wrote into whole buckets."""

    @abc.abstractmethod
    def rollback(self, number: int) -> Version:
        """Publishes the content of an older version as a new version, its
        ledger included (the rolled-back inputs can be applied again)."""

    @abc.abstractmethod
    def compact(self) -> Version | None:
        """Rewrites what runs wrote as changes (the folder store's delta
        segments) into whole buckets, as a new version with the same content;
        None when there is nothing to compact. Callers hold the lock."""


class ProfileStore(ImportTarget, StoreReader):
    """Every store kind: an import target and a reader, with what it keeps
    trimmed by `prune`. A store that keeps its versions is also a
    `VersionHistory` (`history_of` asks for it)."""

    @classmethod
    @abc.abstractmethod
    def at(
        cls, location: Location, *, buckets: int | None = None, work_root: str | None = None
    ) -> ProfileStore:
        """Opens the store at `location` (`stores.open_store`)."""

    @abc.abstractmethod
    def prune(self, keep: int) -> list[int]:
        """Drops what all but the newest `keep` versions keep (never the current
        one): the versions themselves in a store that keeps them, their change
        records in one that keeps only its current state. Returns the versions
        dropped."""


def history_of(store: StoreKind, command: str) -> VersionHistory:
    """`store` as a version history, for `command`; a store that keeps only
    its current state (as its capabilities declare) is refused in one line."""
    if not store.capabilities.keeps_versions or not isinstance(store, VersionHistory):
        raise StoreError(
            f"store {store.url} keeps only its current state, not its earlier versions: "
            f"{command} needs a store that keeps them (a folder or a bucket)"
        )
    return store
