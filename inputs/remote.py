"""Listing inputs on object storage (`s3://`, `gs://`) and the web (`https://`).

Only metadata is read here: a glob lists the objects under its literal
prefix and keeps those the pattern matches (`*` and `?` stop at `/`, as in a
local glob), sorted like local globs; each object's size comes from its
metadata, so a plain object is cut into byte ranges read in parallel (range
requests) like a local file.

Buckets are reached through `stores.buckets`, as the stores in a bucket are:
the same clients, timeouts and one-line errors.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from profile_import.core.locations import Location, parse
from profile_import.stores.buckets import ObjectInfo, open_bucket


class NotFound(Exception):
    """No object at that URL."""


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression on a key: `*` and `?` do not cross `/`."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = body.replace("\\", "\\\\")
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def literal_prefix(key_pattern: str) -> str:
    """The part of a key pattern before its first wildcard."""
    match = re.search(r"[*?\[]", key_pattern)
    return key_pattern if match is None else key_pattern[: match.start()]


def expand_glob(pattern: Location) -> list[Location]:
    """The objects a glob in a bucket matches, sorted by key, spelled as the
    pattern is; folders (`.../`) are not objects."""
    regex = pattern_regex(pattern.path)
    found = open_bucket(pattern.scheme, pattern.bucket).list_objects(literal_prefix(pattern.path))
    keys = sorted(parse(o.url).path for o in found)
    return [pattern.with_key(key) for key in keys if regex.match(key) and not key.endswith("/")]


def stat(url: str) -> ObjectInfo:
    """One input's size and modification time. Raises `NotFound`."""
    location = parse(url)
    if location.is_object:
        try:
            return open_bucket(location.scheme, location.bucket).stat(location.path)
        except FileNotFoundError as e:
            raise NotFound(url) from e
    return _stat_http(url)


def _stat_http(url: str) -> ObjectInfo:
    """A web input's size when the server serves byte ranges; None otherwise
    (it is then read whole, by one worker)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            length = response.headers.get("Content-Length")
            ranges = response.headers.get("Accept-Ranges", "").lower() == "bytes"
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NotFound(url) from e
        if e.code == 405:  # no HEAD: read it whole
            return ObjectInfo(url, None, None)
        raise
    size = int(length) if length is not None and ranges and not encoded else None
    return ObjectInfo(url, size, None)
