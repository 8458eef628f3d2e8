"""The handover folder of a waiting command whose job runs on workers
elsewhere (Dataflow, a cluster): they reach nothing on this machine, so the
command stages its local inputs there, and the job's final step leaves the
report, the rejects and the changes there for the command to bring back.
Beside the run's work folder, which its publish or discard removes."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import Any

from profile_import.core.locations import Location, LocationError
from profile_import.core.locations import parse as parse_location
from profile_import.inputs import plan as input_plan
from profile_import.transforms.steps.finalize import RunContext
from profile_import.transforms.steps.outputs import Output

from . import logs


def in_a_bucket(url: str) -> bool:
    try:
        return parse_location(url).is_object
    except LocationError:
        return False


def folder(store: Location, work_root: str | None, execution_id: str) -> str:
    """The handover folder of a run: beside a database store's work folder
    (under --temp_location), or in the store's bucket."""
    # In the store's bucket, a name the snapshot store leaves alone (a dot).
    root = work_root if work_root is not None else f"{store.url.rstrip('/')}/.outputs"
    return f"{root}/{execution_id}.outputs"


def stage_inputs(inputs: list[input_plan.InputFile], handover: str) -> list[input_plan.InputFile]:
    """Copies the inputs on this machine where the workers read them; each
    keeps its name as given (the report's and the rejects' `file`)."""
    local = [f for f in inputs if not in_a_bucket(f.location)]
    if not local:
        return inputs
    import smart_open

    staged = {}
    with logs.phase("staging inputs", f"{len(local)} input(s) to {handover}/inputs"):
        for f in local:
            target = f"{handover}/inputs/{f.index}/{os.path.basename(f.location)}"
            try:
                with (
                    open(f.location, "rb") as source,
                    smart_open.open(target, "wb", compression="disable") as out,
                ):
                    shutil.copyfileobj(source, out, 1 << 20)
            except Exception as e:  # OSError, and remote clients' own errors
                raise input_plan.InputError(
                    f"input {f.path}: cannot be copied to {target}, where the workers read it: {e}"
                ) from e
            staged[f.index] = replace(f, source=target)
    return [staged.get(f.index, f) for f in inputs]


def collect(
    report: dict[str, Any],
    handover: str,
    rejects_output: Output,
    changes_output: Output,
    default_rejects: str,
) -> tuple[dict[str, Any], bool]:
    """Brings the rejects and the changes a job's final step left in the
    handover folder where the command was told (a local file, standard
    output). Returns the report naming where they are, and whether a file
    stays in the handover folder (it could not be brought)."""
    default_output = Output("--rejects", default_rejects)
    kept = False
    for field_name, name, output in (
        ("rejects_file", "rejects.ndjson", rejects_output),
        ("changes_file", "changes.ndjson", changes_output),
    ):
        handed = f"{handover}/{name}"
        if report.get(field_name) != handed:
            continue
        target = output if output.location is not None else default_output
        try:
            with input_plan.open_raw(handed) as source, target.open() as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
            # The run's outcome stands: the file stays where the job left it.
            logs.log.warning("cannot write %s (%s); it is at %s", target, e, handed)
            kept = True
            continue
        report = {**report, field_name: str(target)}
    return report, kept


def handed_over(ctx: RunContext, handover: str) -> RunContext:
    """The context of a job whose waiting command is elsewhere: its report,
    and its rejects and changes unless they go to a bucket, are left in
    `handover` for the command."""

    def there(location: str | None, name: str) -> str | None:
        kept = location is None or in_a_bucket(location)
        return location if kept else f"{handover}/{name}"

    return replace(
        ctx,
        report_location=f"{handover}/report.json",
        rejects_location=there(ctx.rejects_location, "rejects.ndjson"),
        default_rejects=f"{handover}/rejects.ndjson",
        changes_location=there(ctx.changes_location, "changes.ndjson"),
    )
