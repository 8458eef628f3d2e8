"""Where a run reads and writes: every location a user names, as one value.

A store, an input, a report, rejects, changes and an export's output are all
named the same way, and parsed here once into a `Location`:

    a path           data/in.ndjson, /abs/in.ndjson, C:\\data\\in.ndjson
    file://          file:///abs/in.ndjson (percent-decoded, as a URL is),
                     file://localhost/abs/in.ndjson, file://relative/in.ndjson
    s3://            s3://BUCKET/KEY
    gs://            gs://BUCKET/KEY; gcs:// is the same (an alias)
    https://         inputs only (http:// too): read, never written
    sqlite://        stores only: sqlite:///relative.db, sqlite:////absolute.db
    postgresql://    stores only (postgres:// too)

Anything else (`ftp://`, an unknown scheme, `https://` for an output, a
bucket URL with no bucket) is a `LocationError`, whose message is one line;
the command line prefixes it with the option and exits 2 before anything
runs. A scheme is case-insensitive. A one-letter "scheme" is a Windows drive
(`C://data`), so a path.

The user's spelling is kept (`given`), for messages and the report: a
`gcs://` input is reported as `gcs://...`, and so are the objects its glob
matched. `url` is the canonical form the clients are given: the local path
of a `file://` URL, `gs://` for `gcs://`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

Role = Literal["input", "output", "store"]

LOCAL, S3, GCS, HTTPS, HTTP, SQLITE, POSTGRESQL = (
    "file",
    "s3",
    "gs",
    "https",
    "http",
    "sqlite",
    "postgresql",
)
OBJECT_SCHEMES = (S3, GCS)
WEB_SCHEMES = (HTTPS, HTTP)
DATABASE_SCHEMES = (SQLITE, POSTGRESQL)
SCHEMES = (LOCAL, *OBJECT_SCHEMES, *WEB_SCHEMES, *DATABASE_SCHEMES)
# Other spellings of a scheme, and the scheme they name.
ALIASES = {"gcs": GCS, "postgres": POSTGRESQL}

# What each role accepts, besides a path, and how its error lists them.
ACCEPTED: dict[Role, tuple[str, ...]] = {
    "input": (LOCAL, S3, GCS, HTTPS, HTTP),
    "output": (LOCAL, S3, GCS),
    "store": (LOCAL, S3, GCS, SQLITE, POSTGRESQL),
}
_LISTED: dict[Role, str] = {
    "input": "a path, file://, s3://, gs:// (gcs://) or https://",
    "output": "a path, file://, s3:// or gs:// (gcs://)",
    "store": "a folder, file://, s3://, gs:// (gcs://), sqlite:// or postgresql://",
}
_WHAT: dict[Role, str] = {"input": "an input", "output": "an output", "store": "a store"}

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)\Z", re.DOTALL)
# `s3:/bucket/key` or `gs:bucket`: a URL with its slashes missing, never a path.
_MISSPELT = re.compile(r"(s3|gs|gcs|file|https?|sqlite|postgres(?:ql)?):(?!//)", re.IGNORECASE)
# What a bucket's name may hold: S3's and GCS's rules, loosely (their servers
# check the rest), so that a slip (a space, `s3:///key`) is caught here.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class LocationError(ValueError):
    """A location that names no place a run can use; the message is one line."""


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed location. `scheme` is canonical (`gs` for `gcs://`, `file` for
    a path); `bucket` is an object store's bucket (a web input's host);
    `path` is the local path (`file`, `sqlite`) or the object's key (`s3`,
    `gs`), empty otherwise; `given` is the user's spelling."""

    given: str
    scheme: str
    bucket: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.given

    @property
    def is_local(self) -> bool:
        """A file or folder on this machine."""
        return self.scheme == LOCAL

    @property
    def is_object(self) -> bool:
        """An object (or a prefix) in an S3 or GCS bucket."""
        return self.scheme in OBJECT_SCHEMES

    @property
    def is_web(self) -> bool:
        return self.scheme in WEB_SCHEMES

    @property
    def is_remote(self) -> bool:
        """Read through a client rather than the file system: a bucket or the web."""
        return self.is_object or self.is_web

    @property
    def is_database(self) -> bool:
        return self.scheme in DATABASE_SCHEMES

    @property
    def spelled_scheme(self) -> str:
        """The scheme as the user wrote it (`gcs`), lower-cased; `file` for a path."""
        match = _URL.match(self.given)
        return match.group(1).lower() if match else LOCAL

    @property
    def url(self) -> str:
        """The canonical form the clients are given: a local path for a file,
        `gs://` for `gcs://`, the URL as given for the web and databases."""
        if self.is_local:
            return self.path
        if self.is_object:
            return f"{self.scheme}://{self.bucket}/{self.path}"
        return self.given

    def with_key(self, key: str) -> Location:
        """Another object in the same bucket, spelled as this one (a glob's match)."""
        assert self.is_object
        return Location(
            f"{self.spelled_scheme}://{self.bucket}/{key}", self.scheme, self.bucket, key
        )


def parse(text: str, role: Role | None = None) -> Location:
    """`text` as a Location; `role` (None: any) refuses the schemes it cannot
    use. Raises `LocationError`."""
    if not text:
        raise LocationError("an empty location: give a path or a URL")
    match = _URL.match(text)
    if match is None or len(match.group(1)) == 1:  # a Windows drive: a path
        misspelt = _MISSPELT.match(text)
        if misspelt is not None:
            scheme = misspelt.group(1).lower()
            raise LocationError(f"write {scheme}://..., with two slashes")
        return Location(text, LOCAL, "", text)
    spelled, rest = match.group(1).lower(), match.group(2)
    scheme = ALIASES.get(spelled, spelled)
    if scheme not in (ACCEPTED[role] if role is not None else SCHEMES):
        what = (
            f"{spelled}:// cannot name {_WHAT[role]}"
            if scheme in SCHEMES and role is not None
            else f"the {spelled}:// scheme is not supported"
        )
        listed = f"; use {_LISTED[role]}" if role is not None else ""
        raise LocationError(f"{what}{listed}")
    if scheme == LOCAL:
        return Location(text, LOCAL, "", _file_path(rest))
    if scheme in OBJECT_SCHEMES:
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise LocationError(
                f"no bucket name: write {spelled}://BUCKET/KEY"
                if not bucket
                else f"{bucket!r} is not a bucket name: write {spelled}://BUCKET/KEY"
            )
        if role in ("input", "output") and (not key or key.endswith("/")):
            raise LocationError(f"{_WHAT[role]} names an object: {spelled}://BUCKET/KEY")
        return Location(text, scheme, bucket, key)
    if scheme in WEB_SCHEMES:
        host = urllib.parse.urlsplit(text).netloc
        if not host:
            raise LocationError(f"no host: write {spelled}://HOST/PATH")
        return Location(text, scheme, host, "")
    if scheme == SQLITE:
        if not rest.startswith("/") or rest in ("/", "//"):
            raise LocationError("write sqlite:///relative.db or sqlite:////absolute.db")
        return Location(text, SQLITE, "", rest[1:])
    return Location(text, POSTGRESQL)


def _file_path(rest: str) -> str:
    """The local path of a `file://` URL's remainder: `/abs`, `localhost/abs`,
    or a relative path (`file://data/in.ndjson`, as stores always took it)."""
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    path = urllib.parse.unquote(rest)
    if not path:
        raise LocationError("file:// names no file: write file:///ABSOLUTE/PATH")
    return path


def is_remote(text: str) -> bool:
    """Whether a location the run itself made (a split's path, a work folder)
    is read through a client: a bucket or the web."""
    return parse(text).is_remote
