"""Which engine runs an import: this process, or a Beam runner.

Beam's start-up (a second to import, more to start a worker per core) is
most of a small import's time, so an import small enough to be quicker in
one process runs in this process (`pipelines.in_process`) unless the run
asks for a Beam runner or gives any Beam option. `--runner=InProcess` asks
for this process whatever the size. No Beam import here: choosing must not
cost what it saves.
"""

from __future__ import annotations

from collections.abc import Sequence

from profile_import.inputs.plan import InputFile

IN_PROCESS = "InProcess"
LOCAL_RUNNER = "FnApiRunner"  # Beam's local runner, by name (see runners.local)
# Up to this many bytes of input (decompressed, estimated), one process
# beats the local runner's workers on 2 cores (bench/README.md, "Small imports").
IN_PROCESS_MAX_BYTES = 48 << 20
# A compressed input is counted as this many times its size: NDJSON
# commands compress about 5-10x.
COMPRESSED_FACTOR = 8


def is_in_process_name(name: str) -> bool:
    return name.replace("-", "").replace("_", "").lower() in ("inprocess", "inprocessrunner")


def requested(beam_args: Sequence[str]) -> bool | None:
    """True: `--runner=InProcess` was asked; False: a Beam runner or Beam option
    was; None: neither, the size decides."""
    if not beam_args:
        return None
    return any(map(_asks_in_process, beam_args))


def beam_options_besides(beam_args: Sequence[str]) -> list[str]:
    """The Beam options given beside `--runner=InProcess` (which it cannot honour)."""
    return [arg for arg in beam_args if not _asks_in_process(arg)]


def _asks_in_process(arg: str) -> bool:
    return arg.startswith("--runner=") and is_in_process_name(arg.split("=", 1)[1])


def estimated_bytes(inputs: Sequence[InputFile]) -> int | None:
    """The inputs' content size, decompressed (estimated); None when one is unknown."""
    total = 0
    for f in inputs:
        if f.size is None:
            return None
        total += f.size * (COMPRESSED_FACTOR if f.compression else 1)
    return total


def small(inputs: Sequence[InputFile]) -> bool:
    """Whether the inputs are small enough to import in this process."""
    size = estimated_bytes(inputs)
    return size is not None and size <= IN_PROCESS_MAX_BYTES
