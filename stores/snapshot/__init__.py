"""The embedded default store: versioned snapshots in a folder.

Layout of a store folder:

    profile-store.json          what this folder is: format, bucket count
    CURRENT                     the published version number (replaced atomically)
    versions/00000007.json      one manifest per version: its buckets' files
                                and its ledger's segments (each with its line
                                count, size and crc32), its profile count
    data/<execution>/bucket-00042.kv
                                a bucket's base, written whole: store lines
                                (`core.records`: `<key>\t<export record>`)
                                sorted by key; until the commit records them,
                                a `.stats` file beside each: lines, bytes, crc32
    data/<execution>/bucket-00042.delta.kv
                                a delta segment: what a run changed in a bucket
                                (`core.segments`: changed lines, tombstones)
    data/<execution>/bucket-00042.changes
                                a change segment: the change records of the
                                profiles a version changed in a bucket, by key
                                (`<key>\t<digest of the state before>`, the
                                digest empty for a profile created; SPEC §6)
    ledger/<execution>.ndjson   the input fingerprints an execution applied
                                (see `stores.ledger`)
    staging/<execution>/        a run's scratch space (rejects, progress)
    .lock                       held by the run in progress

Profiles are spread over a fixed number of buckets by a hash of their key. A
version's bucket is a base file and an ordered list of delta segments over it;
a run writes one delta segment per bucket its commands touch, holding only
the profiles it changed, so a run writes on the order of its input, not of the
store. Once a bucket's deltas grow past a fraction of its base (or past a
number of segments), the run rewrites that bucket as a new base instead
(compaction); `compact` does it for every bucket as a version of its own.
Untouched buckets, bases and deltas alike, are shared between versions.
Publishing a version is writing its manifest, then replacing `CURRENT` with
a rename: a run that fails or is killed before that leaves the store exactly
as it was. Old versions stay until `prune`, so `rollback` can publish any
kept one again.

Published versions are those up to `CURRENT`: a manifest above it was left by
a run killed during its publish, is never listed, and is removed by the next
run. A new store is marked `"state": "new"` in profile-store.json until its
first version is published (the last step of that publish): what a failed or
killed first run leaves is not a store, and the next run starts it afresh.

Each version's manifest lists its change segments (`changes`; empty for a
compaction, absent for a version published before change records were kept):
they go with the version, so `prune` drops them with it, and `changes --since
V` reads the segments of the versions after `V` and the current state of only
the profiles they name. A rollback records as its changes every profile
changed by the versions it undoes, so a consumer following the feed receives
it like any run.

Damage is never read as data: each manifest records what each bucket file
and each ledger segment holds, and every read checks it (the size before
anything is read, the line count and crc32 once a file has been read to its
end). `verify` checks a whole version line by line, its ledger and change
segments included, and that `CURRENT` names a version that is there.

The modules, each a part of the store:
- `manifest`: the manifest as data (file names, `Shard`, ledger and change
  segments) and the checks of their lines;
- `checked`: reading a file checked against its record;
- `bucket_files`: the pipeline's `BucketSource` and `BucketSink`;
- `folder`: the store folder's meta, lock, manifests and versions;
- `garbage`: removing what killed runs and pruned versions left;
- `publish`: a run's staging and the atomic publish of a `Commit`;
- `reads`: export, get, scan, get_many, the change feed;
- `history`: rollback and prune; `compact`; `verify`.
"""

from __future__ import annotations

from profile_import.core.locations import Location

from ..base import ProfileStore, VersionHistory
from .bucket_files import SnapshotBucketSink, SnapshotBucketSource
from .compact import Compaction
from .history import History
from .manifest import (
    COMPACT_FRACTION,
    DEFAULT_BUCKETS,
    FORMAT,
    FORMAT_VERSION,
    MAX_DELTAS,
    DeltaLimits,
    Shard,
)
from .publish import Commit, SnapshotStaging
from .verify import Verifying

__all__ = [
    "COMPACT_FRACTION",
    "DEFAULT_BUCKETS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_DELTAS",
    "Commit",
    "Shard",
    "SnapshotBucketSink",
    "SnapshotBucketSource",
    "SnapshotStaging",
    "SnapshotStore",
]


class SnapshotStore(History, Compaction, Verifying, ProfileStore, VersionHistory):
    """The snapshot store: an import target, a reader, and a version history."""

    @classmethod
    def at(
        cls, location: Location, *, buckets: int | None = None, work_root: str | None = None
    ) -> SnapshotStore:
        return cls(location.url, buckets=buckets)

    def delta_limits(self) -> DeltaLimits:
        # This package's settings, read at each run's start (tuning sets them here).
        return DeltaLimits(COMPACT_FRACTION, MAX_DELTAS)
