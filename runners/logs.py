"""The `profile_import` log: when each phase of a run started and ended.

A nightly job's log (cron mail, an Airflow task log) must say when a run
planned its inputs, waited for the store, ran the pipeline, gathered its
rejects and published, so every line starts with its time in ISO 8601 UTC:

    2025-03-01T02:30:00.412Z INFO profile_import: pipeline: started (FnApiRunner, 8 workers)

Beam's own log is plumbing for a command-line user (optional cloud clients
missing, worker start-up, a failure's whole traceback): it is hidden unless
--verbose, the run's one-line summary says what matters.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

LOGGER_NAME = "profile_import"
log = logging.getLogger(LOGGER_NAME)

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UtcFormatter(logging.Formatter):
    """Times as `2025-03-01T02:30:00.412Z`, whatever the machine's time zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def setup(stream: TextIO, *, level: int, beam_log: bool) -> None:
    """Sends the log to `stream`: the project's from `level` up, and Beam's
    (every other logger's) too when `beam_log`.

    Done before Beam is imported: Beam logs through the root logger at import
    time, and logging's first root-level call would install its own handler.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(UtcFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if beam_log:
        root.setLevel(logging.INFO)
    else:
        # The handler on the root keeps logging from adding one of its own;
        # the filter passes the project's records only.
        handler.addFilter(logging.Filter(LOGGER_NAME))
        root.setLevel(logging.CRITICAL)
    log.setLevel(level)


@contextlib.contextmanager
def phase(name: str, detail: str = "") -> Iterator[dict[str, str]]:
    """Logs `name: started` and `name: done in N s`, or how it stopped.

    The caller may set `["detail"]` on the yielded dict: it ends the done line.
    """
    log.info("%s: started%s", name, f" ({detail})" if detail else "")
    begun = time.monotonic()
    end: dict[str, str] = {}
    try:
        yield end
    except KeyboardInterrupt:
        log.info("%s: interrupted after %.2f s", name, time.monotonic() - begun)
        raise
    except BaseException:
        log.info("%s: failed after %.2f s", name, time.monotonic() - begun)
        raise
    detail = f" ({end['detail']})" if end.get("detail") else ""
    log.info("%s: done in %.2f s%s", name, time.monotonic() - begun, detail)
