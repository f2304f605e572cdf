"""The Spark session: reuse the active one (spark-submit, Databricks, Spark Connect),
otherwise build ``local[*]`` with Delta Lake.

Delta's jars are not on PyPI; ``spark.jars.packages`` resolves the artifact that matches
the installed ``delta-spark`` package from Maven Central once and caches it in ~/.ivy2.5.2.
The jars that resolution put on the classpath are remembered there too
(``em-spark-jars-<hash>.txt``): a later start passes them as ``spark.jars`` and skips ivy's
resolution (1-3 s per job process), as long as every one of them is still in the cache.

Quiet by default (em_spark/console.py): Spark's log at ERROR from the JVM's start (a log4j2
file passed with ``spark.driver.extraJavaOptions``) and no stage progress bars; in a quiet
CLI process the JVM's stdout/stderr (ivy's resolution report, log4j) go to a file under
``<lakehouse root>/logs``, and the console gets one line, "fetching Delta Lake jars (first
run only)", when the jars are not in the ivy cache yet. ``--verbose`` keeps Spark's own
output.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyspark
from pyspark.sql import SparkSession

from em_spark import console, jvm_classes
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


_LEVELS = ["ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"]


def _stricter(level: str, floor: str) -> str:
    """The stricter of two log4j levels (an unknown one counts as ``floor``)."""
    rank = {name: i for i, name in enumerate(_LEVELS)}
    level = level.upper()
    return level if rank.get(level, -1) > rank[floor] else floor


def _java_user_home() -> Path:
    """The JVM's ``user.home``: the account's home directory, whatever $HOME says."""
    try:
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError, AttributeError):
        return Path.home()


def _ivy_base(ivy_dir: str | None) -> Path:
    """Spark 4's ivy folder: ``spark.jars.ivy``, else ``~/.ivy2.5.2``."""
    return Path(ivy_dir).expanduser() if ivy_dir else _java_user_home() / ".ivy2.5.2"


def ivy_jar_path(coordinates: str, ivy_dir: str | None = None) -> Path:
    """Where spark.jars.packages retrieves ``group:artifact:version``."""
    group, artifact, rev = coordinates.split(":")[:3]
    return _ivy_base(ivy_dir) / "jars" / f"{group}_{artifact}-{rev}.jar"


def _jar_list_file(packages: list[str], ivy_dir: str | None) -> Path:
    key = hashlib.sha256(",".join(sorted(packages)).encode()).hexdigest()[:16]
    return _ivy_base(ivy_dir) / f"em-spark-jars-{key}.txt"


def _jar_path(uri: str) -> Path:
    """A local jar's path from its ``file:`` URI (or a plain path)."""
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def resolved_jars(packages: list[str], ivy_dir: str | None = None) -> list[str] | None:
    """The jars an earlier start resolved ``packages`` to, if all of them are still in the
    ivy cache (else None: resolve again)."""
    try:
        jars = _jar_list_file(packages, ivy_dir).read_text(encoding="utf-8").split()
    except OSError:
        return None
    if not jars or not all(_jar_path(j).is_file() for j in jars):
        return None
    return jars


def remember_resolved_jars(spark: SparkSession, packages: list[str], ivy_dir: str | None = None) -> None:
    """Record the ivy-cache jars ``spark.jars.packages`` put on this session's classpath."""
    try:
        jars_dir = _ivy_base(ivy_dir) / "jars"
        listed = spark.sparkContext.getConf().get("spark.jars", "") or ""
        jars = [j for j in listed.split(",") if j.startswith("file:") and _jar_path(j).parent == jars_dir]
        if not jars:
            return
        target = _jar_list_file(packages, ivy_dir)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        temporary.write_text("\n".join(jars) + "\n", encoding="utf-8")
        temporary.replace(target)
    except Exception as exc:  # noqa: BLE001 - an optimization only: the next start resolves again
        log.debug("could not record the resolved jars: %s", exc)


def jars_cached(packages: list[str], ivy_dir: str | None = None) -> bool:
    coords = [c.strip() for p in packages for c in p.split(",") if c.count(":") >= 2]
    return all(ivy_jar_path(c, ivy_dir).is_file() for c in coords)


def _note_jars(jvm_log: Path | None, jars: list[str]) -> None:
    """Say in the JVM's log (where ivy's report would be) which cached jars it got."""
    line = "em-spark: Delta Lake jars from the ivy cache, no resolution: " + ", ".join(_jar_path(j).name for j in jars)
    log.debug(line)
    if jvm_log is None:
        return
    try:
        with open(jvm_log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def get_spark(conf: SparkConf | None = None) -> SparkSession:
    """Return the active session if there is one, else build a local Delta-enabled one."""
    existing = active_session()
    if existing is not None:
        return existing
    conf = conf or SparkConf()
    verbose = console.verbose()
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
    # A JVM starts here unless this is a client of a remote Spark Connect server.
    starts_jvm = not (conf.remote or "").startswith("sc://")
    settings = {k: v for k, v in conf.conf.items() if k != "spark.jars.packages"}
    ivy_dir = settings.get("spark.jars.ivy")
    # A JVM started here takes the jars an earlier start resolved (no ivy resolution).
    cached = resolved_jars(packages, ivy_dir) if starts_jvm and not conf.remote else None
    if cached:
        settings["spark.jars"] = ",".join([settings["spark.jars"], *cached] if settings.get("spark.jars") else cached)
    else:
        builder = builder.config("spark.jars.packages", ",".join(packages))
    log_level = conf.log_level
    if not verbose:
        log_level = _stricter(conf.log_level, "ERROR")
        settings["spark.ui.showConsoleProgress"] = "false"
        if starts_jvm and "log4j2.configurationFile" not in settings.get("spark.driver.extraJavaOptions", ""):
            props = console.log4j_properties(log_level)
            java_opts = settings.get("spark.driver.extraJavaOptions", "")
            settings["spark.driver.extraJavaOptions"] = (
                f"{java_opts} -Dlog4j2.configurationFile={props.as_uri()}".strip()
            )
        console.quiet_libraries()
    # Only with the cached jars: a start that resolves them has another classpath.
    sharing = None
    if cached and conf.share_jvm_classes:
        java_opts = settings.get("spark.driver.extraJavaOptions", "")
        sharing = jvm_classes.archive_option(cached, java_opts)
        if sharing:
            settings["spark.driver.extraJavaOptions"] = f"{java_opts} {sharing} {jvm_classes.SILENT}".strip()
    for key, value in settings.items():
        builder = builder.config(key, value)
    log.info("starting Spark (%s) with %s", conf.remote or conf.master, packages[0])
    if starts_jvm and not cached and not jars_cached(packages, ivy_dir):
        console.say("fetching Delta Lake jars (first run only)")
    # A quiet CLI process sends the JVM's own output to a log file (the JVM keeps it): the
    # process's own (its fds 1 and 2 point there already), or one for the JVM alone.
    jvm_log = redirect = None
    if starts_jvm and not verbose:
        jvm_log = console.captured_log()
        if jvm_log is None:
            jvm_log = redirect = console.new_log_file("spark")
    try:
        with console.fds_to_file(redirect):
            if conf.remote:
                # A local Connect server takes these settings at start; the client then
                # re-sends them and Spark warns that static ones can't change. The warnings
                # are harmless.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    return builder.getOrCreate()
            spark = builder.getOrCreate()
    except Exception as exc:
        if jvm_log is None:
            raise
        reason = console.last_error_line(jvm_log) or f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise RuntimeError(f"Spark did not start: {reason} (log: {jvm_log})") from exc
    if cached:
        _note_jars(jvm_log, cached)
        jvm_classes.claim_jvm(sharing, getattr(getattr(spark.sparkContext._gateway, "proc", None), "pid", None))
    elif starts_jvm and not conf.remote:
        remember_resolved_jars(spark, packages, ivy_dir)
    spark.sparkContext.setLogLevel(log_level)
    return spark
