"""The import on a standalone Spark 3.5 cluster (tests/cluster.py): a master
and a worker from the pyspark wheel, Beam's Spark job server (the driver),
SDK workers in their own environment with the wheel, the store in S3 over TCP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cluster import SparkCluster, started_spark
from ..object_servers import S3_ENV
from ..spec.test_conformance import CASES, run_case

pytestmark = pytest.mark.slow

# The rejecting case (the Flink tests cover the rest on every store);
# PROFILE_IMPORT_CLUSTER_ALL_CASES=1 runs every case.
ALL_CASES = os.environ.get("PROFILE_IMPORT_CLUSTER_ALL_CASES") == "1"
SPARK_CASES = [p for p in CASES if ALL_CASES or p.stem == "envelope_errors"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[SparkCluster]:
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    yield from started_spark(tmp_path_factory.mktemp("spark"), env)


# The first case also starts the cluster (the module's fixture).
@pytest.mark.timeout(420)
@pytest.mark.parametrize("case_path", SPARK_CASES, ids=[p.stem for p in SPARK_CASES])
def test_conformance_case_on_spark(
    spark: SparkCluster, case_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(
        case_path,
        "s3",
        tmp_path,
        request,
        command=spark.cli,
        beam=spark.run_args(),
        runner_name="SparkRunner",
    )
