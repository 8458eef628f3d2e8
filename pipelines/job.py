"""What an import run needs, decided by the launcher before anything runs.

No Beam here: the same job runs as the Beam pipeline
(`pipelines.beam_pipeline`) or in one process (`pipelines.in_process`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from profile_import.core.commands import CheckSettings
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES
from profile_import.stores.base import BucketSource
from profile_import.transforms.steps.finalize import Finalizer


def semantics_of(check: CheckSettings, profile_schema_sha: str | None) -> dict[str, Any]:
    """What makes a line mean what it means, beside its content (SPEC §4):
    part of every input's fingerprint, whoever launches the run."""
    declarations = check.declarations
    return {
        "default_compartment_id": check.default_compartment_id,
        "profile_schema": profile_schema_sha,
        "max_line_bytes": check.max_line_bytes,
        # Only when given, so the fingerprints of runs without it do not change.
        **({"properties": declarations.fingerprint()} if declarations else {}),
        **({} if check.holds_nul else {"rejects_nul": True}),
    }


@dataclass(frozen=True)
class ImportJob:
    """Everything the pipeline needs, decided before it is built."""

    finalizer: Finalizer  # the run's context, its store, parent and staging
    check: CheckSettings
    semantics: Mapping[str, Any]  # the options that change what a line means (SPEC §4)
    allow_reapply: bool
    buckets: int
    source: BucketSource  # the parent version's buckets
    work_dir: str
    split_bytes: int = DEFAULT_SPLIT_BYTES
    # Where local workers drop progress markers for the display (None: none);
    # the launcher's own folder, which outlives the run's staging.
    progress_dir: str | None = None
    spill: bool = False  # shuffle batches through files in work_dir (transforms.steps.batches)
    transport_params: dict[str, Any] = field(default_factory=dict)
    # Where the spill goes when the work folder is in a bucket (a store there)
    # and the workers share this machine's disk: a local folder.
    spill_root: str | None = None

    @property
    def rejects_dir(self) -> str:
        return os.path.join(self.work_dir, "rejects")

    @property
    def counts_dir(self) -> str:
        """Each split's counts (`transforms.steps.count_files`), for the report of
        a pipeline that fails before its final step."""
        return os.path.join(self.work_dir, "counts")

    @property
    def spill_dir(self) -> str | None:
        return os.path.join(self.spill_root or self.work_dir, "shuffle") if self.spill else None
