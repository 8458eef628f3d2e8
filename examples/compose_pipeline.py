"""A Beam pipeline of one's own that imports profiles with `ImportProfiles`.

Two sources meet in one import: a CRM export in CSV (a foreign format,
adapted to commands by a Map) and a file of NDJSON commands as the command
line reads them. Run it from the repository's root:

    python examples/compose_pipeline.py --store /tmp/crm-store \\
        examples/crm_export.csv examples/commands.ndjson
    profile-import export --store /tmp/crm-store

It prints the import's report. Run it again: both sources were applied
before, so the report says ALREADY_APPLIED and the store is unchanged.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from profile_import import CommandLine, ImportProfiles

COMPARTMENT = "1000"


def numbered_lines(path: str) -> Iterator[tuple[str, int, str]]:
    """(source, line number, line) for every line of a local file."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            yield path, number, line


def crm_row_to_command(line: tuple[str, int, str]) -> CommandLine:
    """A CRM export row (account_id,first_name,city,unsubscribed) as an
    UPSERT that merges what the row says into the account's profile. A row
    that is not one goes through as it is: the import rejects it, with its
    source and line number, and goes on."""
    source, number, text = line
    fields = next(csv.reader([text]))
    if len(fields) != 4:
        return CommandLine(source, number, text)
    account, first_name, city, unsubscribed = fields
    profile: dict[str, Any] = {"address": {"city": city}, "opt_in": unsubscribed != "yes"}
    if first_name:
        profile["first_name"] = first_name
    command = {
        "operation": "UPSERT",
        "compartment_id": COMPARTMENT,
        "user_account_id": account,
        "force_replace": False,
        "merge_objects": True,
        "user_profile": profile,
    }
    return CommandLine(source, number, json.dumps(command))


def build(
    pipeline: beam.Pipeline, inputs: Sequence[str], store: str, rejects: str | None = None
) -> beam.pvalue.PCollection[dict[str, Any]]:
    """The import of `inputs` (CSV exports and NDJSON files) as steps of `pipeline`."""
    csv_inputs = [path for path in inputs if path.endswith(".csv")]
    ndjson_inputs = [path for path in inputs if not path.endswith(".csv")]
    crm = (
        pipeline
        | "ReadCrmExports" >> beam.Create([line for p in csv_inputs for line in numbered_lines(p)])
        | "SkipHeaders" >> beam.Filter(lambda line: line[1] > 1)
        | "CrmRowsToCommands" >> beam.Map(crm_row_to_command)
    )
    commands = (
        pipeline
        | "ReadCommands" >> beam.Create([line for p in ndjson_inputs for line in numbered_lines(p)])
        | "AsCommandLines" >> beam.MapTuple(CommandLine)
    )
    reports: beam.pvalue.PCollection[dict[str, Any]] = (
        (crm, commands)
        | "AllCommands" >> beam.Flatten()
        | "ImportProfiles" >> ImportProfiles(store, rejects=rejects)
    )
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the profile store (a folder, a URL)")
    parser.add_argument("--rejects", help="where the rejected lines go (NDJSON)")
    parser.add_argument("inputs", nargs="+", help="CRM exports (.csv) and NDJSON command files")
    args = parser.parse_args(argv)
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        report = build(pipeline, args.inputs, args.store, args.rejects)
        _ = report | "PrintReport" >> beam.Map(lambda r: print(json.dumps(r, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
