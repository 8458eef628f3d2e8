"""Writes a launcher jar: a manifest naming a main class and a folder of jars.

`java -jar LAUNCHER` then runs MAIN with every jar of the folder on its
classpath, which is what Beam's Python runners expect of `--flink_job_server_jar`
and `--spark_job_server_jar` (they start `java -jar JAR ARGS`). Beam builds
the same kind of jar itself (`make_classpath_jar`). The manifest also opens
the JDK packages the job servers reflect into on Java 17, as `--add-opens`
would (a `java -jar` launch takes no other flags from Beam).

    python launcher_jar.py OUT.jar MAIN_CLASS LIB_FOLDER [LIB_FOLDER...]

Class-Path entries are relative to the launcher jar, as the JAR format requires.
"""

from __future__ import annotations

import os
import sys
import zipfile

OPENS = (
    "java.base/java.lang java.base/java.lang.invoke java.base/java.lang.reflect "
    "java.base/java.io java.base/java.net java.base/java.nio java.base/sun.nio.ch "
    "java.base/sun.nio.cs java.base/sun.security.action java.base/sun.util.calendar "
    "java.base/java.util java.base/java.util.concurrent java.base/java.util.concurrent.atomic "
    "java.base/java.text java.base/java.time"
)


def _wrapped(name: str, value: str) -> str:
    """A manifest header, cut into lines of at most 72 bytes as the format asks."""
    line = f"{name}: {value}"
    parts = [line[:72]]
    line = line[72:]
    while line:
        parts.append(" " + line[:71])
        line = line[71:]
    return "\r\n".join(parts) + "\r\n"


def main(argv: list[str]) -> int:
    out, main_class, *folders = argv
    base = os.path.dirname(os.path.abspath(out))
    entries = []
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".jar"):
                entries.append(os.path.relpath(os.path.join(folder, name), base))
    if not entries:
        print(f"launcher_jar: no jars in {' '.join(folders)}", file=sys.stderr)
        return 1
    manifest = (
        "Manifest-Version: 1.0\r\n"
        + _wrapped("Main-Class", main_class)
        + _wrapped("Class-Path", " ".join(entries))
        + _wrapped("Add-Opens", OPENS)
        + "\r\n"
    )
    tmp = f"{out}.tmp"
    with zipfile.ZipFile(tmp, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
