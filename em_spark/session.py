"""The Spark session: reuse the active one (spark-submit, Databricks, Spark Connect),
otherwise build ``local[*]`` with Delta Lake.

Delta's jars are not on PyPI; ``spark.jars.packages`` resolves the artifact that matches
the installed ``delta-spark`` package from Maven Central once and caches it in ~/.ivy2.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

import pyspark
from pyspark.sql import SparkSession

from em_spark.config import SparkConf

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def delta_maven_coordinates() -> str:
    """The Maven artifact of the installed delta-spark (``delta-spark_<spark>_<scala>``)."""
    try:
        delta_version = version("delta-spark")
    except PackageNotFoundError as exc:  # pragma: no cover - install problem
        raise RuntimeError("delta-spark is not installed; run the README's setup") from exc
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    # Spark 4.x is built for Scala 2.13 only; Delta 4.x names artifacts per Spark minor.
    return f"io.delta:delta-spark_{spark_minor}_2.13:{delta_version}"


def active_session() -> SparkSession | None:
    return SparkSession.getActiveSession()


def get_spark(conf: SparkConf | None = None) -> SparkSession:
    """Return the active session if there is one, else build a local Delta-enabled one."""
    existing = active_session()
    if existing is not None:
        return existing
    conf = conf or SparkConf()
    # Workers must run this interpreter, or they start a Python without our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    builder = builder.remote(conf.remote) if conf.remote else builder.master(conf.master)
    builder = (
        builder.appName(conf.app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    )
    packages = [delta_maven_coordinates()]
    extra = conf.conf.get("spark.jars.packages")
    if extra:
        packages.append(extra)
    builder = builder.config("spark.jars.packages", ",".join(packages))
    for key, value in conf.conf.items():
        if key != "spark.jars.packages":
            builder = builder.config(key, value)
    log.info("starting Spark (%s) with %s", conf.remote or conf.master, packages[0])
    if conf.remote:
        # A local Connect server takes these settings at start; the client then re-sends
        # them and Spark warns that static ones can't change. The warnings are harmless.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return builder.getOrCreate()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf.log_level)
    return spark
