"""Which engine runs an import: this process, or a Beam runner.

With no Beam option, an import runs without Beam (`pipelines.in_process`:
this process alone, or from `PARALLEL_MIN_BYTES` one forked worker per core
this process may use, `local_workers`) whenever that is faster and fits in
memory:

- up to `IN_PROCESS_MAX_BYTES` of input, always: Beam's start-up (a second
  to import, more to start a worker per core) would be most of the time;
- up to `LOCAL_MAX_BYTES`, when every input is a local uncompressed file
  (the workers cut it in parts) and the run's memory, about
  `MEMORY_PER_INPUT_BYTE` per byte of input, is at most half of what the
  machine (or the container) has free. On 2 cores it is about 1.35x as fast
  as Beam's local runner at 1M lines, with about 15% less CPU
  (bench/README.md).

Anything larger, or unsized, compressed or in a bucket, runs on Beam's
local runner, whose memory does not grow with the input. Any Beam option
asks for Beam; `--runner=InProcess` for this process whatever the size. No
Beam import here: choosing must not cost what it saves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import suppress

from profile_import.core.locations import is_remote
from profile_import.inputs.plan import InputFile

IN_PROCESS = "InProcess"
LOCAL_RUNNER = "FnApiRunner"  # Beam's local runner, by name (see runners.local)
# Up to this many bytes of input (decompressed, estimated), no Beam, always.
IN_PROCESS_MAX_BYTES = 48 << 20
# Up to this many, no Beam for local uncompressed files that fit in memory.
LOCAL_MAX_BYTES = 512 << 20
# The run's memory (all its processes) per byte of input, with a margin:
# 0.8 GiB for the bench's 305 MiB of 1M lines, about 2.7 bytes a byte; short
# lines cost more a byte (each line's key, list slots, a view per handed line).
MEMORY_PER_INPUT_BYTE = 6
# A compressed input is counted as this many times its size: NDJSON
# commands compress about 5-10x.
COMPRESSED_FACTOR = 8
# From this many bytes of local input (about 3,300 lines), the local engine
# forks workers, one more per this many bytes up to the cores it may use:
# below, forking and handing lines over cost what they save.
PARALLEL_MIN_BYTES = 1 << 20


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


def small(inputs: Sequence[InputFile], available: int | None = None) -> bool:
    """Whether the inputs are to be imported without Beam; `available`: the
    bytes of memory free (None: as the system says, `available_memory`)."""
    size = estimated_bytes(inputs)
    if size is None or size > LOCAL_MAX_BYTES:
        return False
    if size <= IN_PROCESS_MAX_BYTES:
        return True
    if any(f.compression is not None or is_remote(f.location) for f in inputs):
        return False
    free = available_memory() if available is None else available
    return free is not None and size * MEMORY_PER_INPUT_BYTE <= free // 2


def available_memory() -> int | None:
    """The bytes of memory a run can use: the system's available memory, or
    what is left under this container's limit (cgroup v2) if less; None
    where neither is known (not Linux)."""
    free = None
    with suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    with suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
                left = int(limit) - int(f.read().strip())
            free = left if free is None else min(free, left)
    return free


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (`taskset`, a
    container's cpuset), bounded by its cgroup v2 CPU quota (`cpu.max`, a
    container's `--cpus`), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    with suppress(OSError, ValueError), open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
        quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(cores, 1)


def local_workers(local_bytes: int) -> int:
    """How many processes the local engine runs for this many bytes of local
    plain input: one per `PARALLEL_MIN_BYTES` begun past the first, up to the
    usable cores; one (this process, no fork) below it or on one core."""
    if not hasattr(os, "fork") or local_bytes < PARALLEL_MIN_BYTES:
        return 1
    return min(usable_cores(), local_bytes // PARALLEL_MIN_BYTES + 1)
