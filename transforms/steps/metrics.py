"""Names of the Beam counters that feed the run report."""

from __future__ import annotations

NAMESPACE = "profile_import"

LINES = "lines"
BLANK = "blank"
ACCEPTED = "accepted"
REJECTED = "rejected"
UPSERTS = "upserts"
DELETES = "deletes"
REJECTED_PREFIX = "rejected."  # + reject code
INPUT_LINES_PREFIX = "input_lines."  # + input index

COMMANDS_APPLIED = "commands_applied"
PROFILES_CREATED = "profiles_created"
PROFILES_UPDATED = "profiles_updated"
PROFILES_UNCHANGED = "profiles_unchanged"
PROFILES_DELETED = "profiles_deleted"
DELETES_MISSING = "deletes_missing"
BUCKETS_WRITTEN = "buckets_written"
