"""Class data sharing for the Spark driver JVM that a job process starts itself.

A job process that starts a local JVM spends seconds loading and verifying the same
Spark and Delta classes as every process before it. The JVM can map them from an
archive instead (JDK class data sharing; every JDK that Spark 4 runs on has it):

- the first process that finds no archive starts its JVM with
  ``-XX:ArchiveClassesAtExit``: the JVM writes the classes it loaded when it exits
  (a one-off cost of several seconds and about 200 MB on disk);
- while that process or its JVM runs, other processes start without the archive;
- the next process after them checks the archive with ``java -version`` (one cut short
  by a killed JVM crashes the JVM that maps it; the check finds that) and renames it into
  place; from then on every JVM starts with ``-XX:SharedArchiveFile``.

An archive holds the absolute paths of the jars it was written with, and a JVM whose
classpath differs cannot map it. Archives live under ``~/.cache/em-spark/jvm``
(``$XDG_CACHE_HOME``), one per JDK build, PySpark installation (its folder: two virtual
environments have two) and jar list; one whose PySpark folder is gone (a deleted clone's
environment) is deleted. The JVM's own messages about archives are off: one that cannot
be mapped all the same (a JDK replaced in place) only means a start without sharing.
Measured in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pyspark

log = logging.getLogger(__name__)

# Options through which a user already chose what the JVM shares: left alone.
_USER_OPTIONS = ("-XX:SharedArchiveFile", "-XX:ArchiveClassesAtExit", "-Xshare")
# Goes with either option: the JVM would print "Unable to use shared archive" and the
# classes it leaves out of an archive on the console.
SILENT = "-Xlog:cds*=off"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "em-spark" / "jvm"


def java_binary() -> Path | None:
    """The ``java`` that spark-submit runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def spark_jars() -> Path:
    """The folder of the jars that PySpark puts on the driver's classpath."""
    return (Path(pyspark.__file__).parent / "jars").resolve()


def archive_option(
    jars: list[str], java_options: str, folder: Path | None = None, spark_jars_dir: Path | None = None
) -> str | None:
    """The JVM option that shares classes for a driver with ``jars`` and the jars of
    ``spark_jars_dir`` (default: this PySpark's) on its classpath, or None (no ``java``
    found, the user set such options, or another process's JVM is writing the archive).
    Pass :data:`SILENT` to the JVM with it."""
    if any(option in java_options for option in _USER_OPTIONS):
        return None
    java = java_binary()
    if java is None:
        return None
    folder = folder or cache_dir()
    spark_jars_dir = spark_jars_dir or spark_jars()
    try:
        build = java.stat()
        identity = [str(java), str(build.st_size), str(build.st_mtime_ns), pyspark.__version__, str(spark_jars_dir)]
        key = hashlib.sha256("\n".join(identity + sorted(jars)).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        _forget_gone_installations(folder)
        (folder / f"{key}.classpath").write_text(f"{spark_jars_dir}\n", encoding="utf-8")
        return _option(folder, key, java)
    except OSError as exc:
        log.debug("no class data sharing: %s", exc)
        return None


def _forget_gone_installations(folder: Path) -> None:
    """Delete the archives that nothing can map again, with their records and claims:
    those of PySpark folders that no longer exist, and those without a record of theirs
    (written by an older em-spark)."""
    gone = {
        record.name.split(".")[0]
        for record in folder.glob("*.classpath")
        if not Path(record.read_text(encoding="utf-8").strip()).is_dir()
    }
    for archive in folder.glob("*.jsa"):
        key = archive.name.split(".")[0]
        if key in gone or not (folder / f"{key}.classpath").is_file():
            archive.unlink(missing_ok=True)
    for key in gone:
        for claim in folder.glob(f"{key}.*.claim"):
            claim.unlink(missing_ok=True)
        (folder / f"{key}.classpath").unlink(missing_ok=True)


def _option(folder: Path, key: str, java: Path) -> str | None:
    archive = folder / f"{key}.jsa"
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive}"
    # A claim (<key>.<pid>.claim: the pids of a process and of its JVM) says who writes
    # <key>.<pid>.jsa; once they are gone, what they wrote is checked and put in place.
    for claim in folder.glob(f"{key}.*.claim"):
        if any(_alive(pid) for pid in _pids(claim)):
            return None
        written = claim.with_suffix(".jsa")
        if written.is_file() and _maps(java, written):
            written.replace(archive)
        else:
            written.unlink(missing_ok=True)
        claim.unlink(missing_ok=True)
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive}"
    claim = folder / f"{key}.{os.getpid()}.claim"
    claim.write_text(f"{os.getpid()}\n", encoding="utf-8")
    return f"-XX:ArchiveClassesAtExit={claim.with_suffix('.jsa')}"


def claim_jvm(option: str | None, jvm_pid: int | None) -> None:
    """Add the started JVM's pid to this process's claim, if it writes the archive: the
    JVM writes it when it exits, which may be after this process."""
    if not option or not jvm_pid or not option.startswith("-XX:ArchiveClassesAtExit="):
        return
    claim = Path(option.split("=", 1)[1]).with_suffix(".claim")
    try:
        with open(claim, "a", encoding="utf-8") as fh:
            fh.write(f"{jvm_pid}\n")
    except OSError as exc:
        log.debug("could not record the JVM's pid: %s", exc)


def _pids(claim: Path) -> list[int]:
    try:
        return [int(line) for line in claim.read_text(encoding="utf-8").split()]
    except (OSError, ValueError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _maps(java: Path, archive: Path) -> bool:
    """Whether a JVM starts with ``archive`` (one cut short makes it abort)."""
    # A JVM that aborts writes hs_err_pid<N>.log where it runs unless told otherwise.
    argv = [str(java), f"-XX:SharedArchiveFile={archive}", f"-XX:ErrorFile={os.devnull}", "-version"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, cwd=archive.parent)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
