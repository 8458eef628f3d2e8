"""Listing inputs on object storage (`s3://`, `gs://`) and the web (`https://`).

Only metadata is read here: a glob lists the objects under its literal
prefix and keeps those the pattern matches (`*` and `?` stop at `/`, as in a
local glob), sorted like local globs; each object's size comes from its
metadata, so a plain object is cut into byte ranges read in parallel (range
requests) like a local file.

Credentials and endpoints come from each client's standard environment:
boto3's (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...) for S3
and S3-compatible stores, Google's application default credentials and
`STORAGE_EMULATOR_HOST` for GCS. Smart-open, which reads the content, builds
its clients from the same environment.
"""

from __future__ import annotations

import glob
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

OBJECT_SCHEMES = ("s3", "gs", "gcs")


class NotFound(Exception):
    """No object at that URL."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    url: str
    size: int | None
    modified_ns: int | None


def split_url(url: str) -> tuple[str, str, str]:
    """`s3://bucket/key` → ("s3", "bucket", "key")."""
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


def is_object_url(url: str) -> bool:
    return "://" in url and url.split("://", 1)[0] in OBJECT_SCHEMES


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


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def gcs_client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    return storage.Client()


def _ns(when: Any) -> int | None:
    return None if when is None else int(when.timestamp() * 1_000_000_000)


def _list_prefix(scheme: str, bucket: str, prefix: str) -> list[ObjectInfo]:
    if scheme == "s3":
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [
            ObjectInfo(f"s3://{bucket}/{o['Key']}", o["Size"], _ns(o.get("LastModified")))
            for page in pages
            for o in page.get("Contents", [])
        ]
    return [
        ObjectInfo(f"{scheme}://{bucket}/{b.name}", b.size, _ns(b.updated))
        for b in gcs_client().list_blobs(bucket, prefix=prefix)
    ]


def expand_glob(pattern: str) -> list[str]:
    """The objects a glob URL matches, sorted; folders (`.../`) are not objects."""
    scheme, bucket, key_pattern = split_url(pattern)
    regex = pattern_regex(key_pattern)
    found = _list_prefix(scheme, bucket, literal_prefix(key_pattern))
    keys = (split_url(o.url)[2] for o in found)
    return sorted(
        f"{scheme}://{bucket}/{key}" for key in keys if regex.match(key) and not key.endswith("/")
    )


def has_magic(url: str) -> bool:
    return is_object_url(url) and glob.has_magic(split_url(url)[2])


def stat(url: str) -> ObjectInfo:
    """One input's size and modification time. Raises `NotFound`."""
    if is_object_url(url):
        scheme, bucket, key = split_url(url)
        if scheme == "s3":
            from botocore.exceptions import ClientError

            try:
                head = s3_client().head_object(Bucket=bucket, Key=key)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise NotFound(url) from e
                raise
            return ObjectInfo(url, head["ContentLength"], _ns(head.get("LastModified")))
        blob = gcs_client().bucket(bucket).get_blob(key)
        if blob is None:
            raise NotFound(url)
        return ObjectInfo(url, blob.size, _ns(blob.updated))
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
