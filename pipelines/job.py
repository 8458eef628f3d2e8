"""What an import run needs, decided by the launcher before anything runs:
the rules lines are checked against (`LineRules`), what makes a line mean
what it means (`semantics_of`), and the job itself (`ImportJob`).

No Beam here: the same job runs as the Beam pipeline
(`pipelines.beam_pipeline`) or in one process (`pipelines.in_process`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from profile_import.core.commands import CheckSettings
from profile_import.core.properties import DeclarationError, Declarations
from profile_import.core.validation import InvalidSchema, SchemaValidator
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES, open_raw
from profile_import.stores.base import BucketSource
from profile_import.transforms.steps.finalize import Finalizer


class DefinitionError(Exception):
    """A profile schema or property declarations a run cannot use: nothing runs."""


@dataclass(frozen=True)
class LineRules:
    """What lines are checked against beside SPEC's own rules, read once
    before anything runs: `--profile-schema`, `--properties-file`."""

    profile_schema: dict[str, Any] | None = None
    profile_schema_sha: str | None = None  # part of every input's fingerprint
    declarations: Declarations | None = None

    @classmethod
    def load(
        cls, profile_schema_path: str | None, properties_path: str | None, allow_undeclared: bool
    ) -> LineRules:
        """Raises `DefinitionError`, naming the option, the file and the cause."""
        schema, sha = _load_profile_schema(profile_schema_path)
        return cls(schema, sha, _load_declarations(properties_path, allow_undeclared))

    def check_settings(
        self,
        *,
        default_compartment_id: str | None,
        max_line_bytes: int,
        redact: bool,
        holds_nul: bool,
    ) -> CheckSettings:
        return CheckSettings(
            default_compartment_id=default_compartment_id,
            profile_schema=self.profile_schema,
            declarations=self.declarations,
            max_line_bytes=max_line_bytes,
            redact=redact,
            holds_nul=holds_nul,
        )


def _load_profile_schema(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, None
    try:
        with open_raw(path) as f:
            data = f.read()
        schema = orjson.loads(data)
    except (OSError, orjson.JSONDecodeError) as e:
        raise DefinitionError(f"--profile-schema {path}: cannot be read as JSON: {e}") from e
    if not isinstance(schema, dict | bool):
        raise DefinitionError(f"--profile-schema {path}: a JSON Schema is an object")
    try:
        SchemaValidator(schema)
    except InvalidSchema as e:
        raise DefinitionError(f"--profile-schema {path}: {e}") from e
    return schema, hashlib.sha256(data).hexdigest()  # type: ignore[return-value]


def _load_declarations(path: str | None, allow_undeclared: bool) -> Declarations | None:
    if path is None:
        if allow_undeclared:
            raise DefinitionError("--allow-undeclared-properties needs --properties-file")
        return None
    try:
        with open_raw(path) as f:
            data = f.read()
        return Declarations.from_json(data, allow_undeclared=allow_undeclared)
    except OSError as e:
        raise DefinitionError(f"--properties-file {path}: cannot be read: {e}") from e
    except DeclarationError as e:
        raise DefinitionError(f"--properties-file {path}: {e}") from e


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
