#!/usr/bin/env bash
# Fetches what the cluster tests (tests/test_cluster_*.py) run, once, into a
# git-ignored cache (default .cache/cluster, or $PROFILE_IMPORT_CLUSTER_CACHE):
#
#   flink-1.19/           Flink 1.19 (JobManager, TaskManagers) from its PyPI wheels
#   spark-3.5/            Spark 3.5 (Scala 2.12) from the pyspark wheel
#   flink-job-server/     Beam's Flink job server: its jars and a launcher jar
#   spark-job-server/     Beam's Spark job server: its jars and a launcher jar
#   venv/                 the SDK workers' (and launching command's) Python
#                         environment: Beam $BEAM_VERSION and the project's
#                         dependencies; the tests install the project's wheel into it
#
# Each part is fetched only when its marker is missing, so a second call costs
# nothing. Needs python3.11, java (17) and mvn; nothing is fetched at run time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${PROFILE_IMPORT_CLUSTER_CACHE:-$root/.cache/cluster}"
# The newest Beam whose Flink and Spark runner libraries the build can fetch
# (the Python SDK of the workers and of the launching command must match it).
BEAM_VERSION=2.70.0
FLINK_VERSION=1.19.3
SPARK_VERSION=3.5.7
for tool in java mvn python3.11; do
    if ! command -v "$tool" > /dev/null; then
        echo "fetch: no $tool here: the cluster tests will be skipped" >&2
        exit 0
    fi
done
mkdir -p "$cache"

done_marker() { [ -f "$cache/$1/.fetched-$2" ]; }
mark_done() { touch "$cache/$1/.fetched-$2"; }

if ! done_marker flink-1.19 "$FLINK_VERSION"; then
    echo "fetch: Flink $FLINK_VERSION" >&2
    rm -rf "$cache/flink-1.19"
    # --no-deps: apache-flink pins an old apache-beam; only its files are used.
    python3.11 -m pip install -q --no-deps --target "$cache/flink-1.19" \
        "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"
    mark_done flink-1.19 "$FLINK_VERSION"
fi

if ! done_marker spark-3.5 "$SPARK_VERSION"; then
    echo "fetch: Spark $SPARK_VERSION" >&2
    rm -rf "$cache/spark-3.5"
    python3.11 -m pip install -q --no-deps --target "$cache/spark-3.5" "pyspark==$SPARK_VERSION"
    mark_done spark-3.5 "$SPARK_VERSION"
fi

job_server() {  # NAME MAIN_CLASS [EXTRA_JAR_FOLDER]
    local name="$1" main="$2" extra="${3:-}"
    if done_marker "$name" "$BEAM_VERSION"; then return; fi
    echo "fetch: Beam $BEAM_VERSION $name" >&2
    rm -rf "$cache/$name"
    mkdir -p "$cache/$name"
    mvn -q -B -Dstyle.color=never -f "$here/$name.pom.xml" -Dbeam.version="$BEAM_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$cache/$name/lib"
    # shellcheck disable=SC2086
    python3.11 "$here/launcher_jar.py" "$cache/$name/$name.jar" "$main" "$cache/$name/lib" $extra
    mark_done "$name" "$BEAM_VERSION"
}
job_server flink-job-server org.apache.beam.runners.flink.FlinkJobServerDriver
# Spark's own jars (a "provided" dependency of Beam's runner) come from pyspark.
job_server spark-job-server org.apache.beam.runners.spark.SparkJobServerDriver \
    "$cache/spark-3.5/pyspark/jars"

if ! done_marker venv "$BEAM_VERSION"; then
    echo "fetch: the workers' environment (Beam $BEAM_VERSION)" >&2
    rm -rf "$cache/venv"
    python3.11 -m venv "$cache/venv"
    # The project's own dependencies, from its wheel's metadata; the tests
    # install the wheel of the checkout under test over them.
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' EXIT
    python3.11 -m pip wheel -q --no-deps -w "$wheels" "$root"
    "$cache/venv/bin/pip" install -q "apache-beam[gcp]==$BEAM_VERSION" \
        "$(ls "$wheels"/profile_import-*.whl)[s3,gcp,postgresql]"
    "$cache/venv/bin/pip" uninstall -q -y profile-import
    mark_done venv "$BEAM_VERSION"
fi
echo "fetch: the cluster cache is ready in $cache" >&2
