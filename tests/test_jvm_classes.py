"""Class data sharing for a locally started JVM (em_spark/jvm_classes.py), with the real
``java``: who writes the archive, how a finished one is checked and put in place, and
what happens to one cut short."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from em_spark import jvm_classes

JARS = ["file:///ivy/jars/io.delta_delta-spark.jar"]


@pytest.fixture(scope="module")
def java() -> Path:
    found = jvm_classes.java_binary()
    assert found is not None, "the tests need the java that Spark runs"
    return found


@pytest.fixture(scope="module")
def small_archive(java: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real archive: the classes of ``java -version``."""
    path = tmp_path_factory.mktemp("archive") / "version.jsa"
    subprocess.run([str(java), f"-XX:ArchiveClassesAtExit={path}", "-version"], check=True, capture_output=True)
    return path.read_bytes()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _claim_of(option: str) -> Path:
    return Path(option.split("=", 1)[1]).with_suffix(".claim")


def test_the_first_process_claims_the_archive_and_others_wait_for_it(tmp_path: Path) -> None:
    option = jvm_classes.archive_option(JARS, "", tmp_path)
    assert option is not None and option.startswith("-XX:ArchiveClassesAtExit=")
    claim = _claim_of(option)
    assert claim.read_text().split() == [str(os.getpid())]
    jvm_classes.claim_jvm(option, 4242)
    assert claim.read_text().split() == [str(os.getpid()), "4242"]
    # While the claimant lives, another start goes without (no second archive written).
    assert jvm_classes.archive_option(JARS, "", tmp_path) is None


def test_a_finished_archive_is_checked_and_put_in_place(tmp_path: Path, small_archive: bytes, java: Path) -> None:
    option = jvm_classes.archive_option(JARS, "", tmp_path)
    written = Path(option.split("=", 1)[1])
    # The claimant and its JVM have exited, leaving the archive.
    dead = _dead_pid()
    _claim_of(option).write_text(f"{dead}\n")
    written.write_bytes(small_archive)

    again = jvm_classes.archive_option(JARS, "", tmp_path)
    assert again is not None and again.startswith("-XX:SharedArchiveFile=")
    archive = Path(again.split("=", 1)[1])
    assert archive.read_bytes() == small_archive
    assert not written.exists() and not _claim_of(option).exists()
    # The JVM maps it (-Xshare:on fails where it cannot).
    subprocess.run([str(java), "-Xshare:on", again, "-version"], check=True, capture_output=True)
    # Other jars: another archive.
    other = jvm_classes.archive_option(["file:///ivy/jars/other.jar"], "", tmp_path)
    assert other is not None and other.startswith("-XX:ArchiveClassesAtExit=")


def test_an_archive_cut_short_is_discarded_and_claimed_again(tmp_path: Path, small_archive: bytes, java: Path) -> None:
    option = jvm_classes.archive_option(JARS, "", tmp_path)
    written = Path(option.split("=", 1)[1])
    _claim_of(option).write_text(f"{_dead_pid()}\n")
    written.write_bytes(small_archive[: len(small_archive) // 2])
    # Mapped, it would crash the JVM.
    crashed = subprocess.run(
        [str(java), f"-XX:SharedArchiveFile={written}", f"-XX:ErrorFile={os.devnull}", "-version"],
        capture_output=True, cwd=tmp_path,
    )
    assert crashed.returncode != 0

    again = jvm_classes.archive_option(JARS, "", tmp_path)
    key = written.name.split(".")[0]
    assert again == f"-XX:ArchiveClassesAtExit={tmp_path / f'{key}.{os.getpid()}.jsa'}"
    assert not written.exists()
    assert not list(tmp_path.glob("*.jsa"))
    assert not list(tmp_path.glob("hs_err*")) and not list(Path.cwd().glob("hs_err*"))


def test_the_users_own_sharing_options_are_left_alone(tmp_path: Path) -> None:
    for options in ("-Xshare:off", "-XX:SharedArchiveFile=/mine.jsa", "-Dx=1 -XX:ArchiveClassesAtExit=/mine.jsa"):
        assert jvm_classes.archive_option(JARS, options, tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_each_pyspark_installation_has_its_own_archive_and_a_gone_ones_is_deleted(
    tmp_path: Path, small_archive: bytes
) -> None:
    # The JVM records the absolute jar paths: a second virtual environment cannot map the
    # first one's archive (measured: a fresh clone's archive broke sharing in the repo).
    cache = tmp_path / "cache"
    first, second = tmp_path / "env1" / "jars", tmp_path / "env2" / "jars"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    option = jvm_classes.archive_option(JARS, "", cache, first)
    archive = cache / (Path(option.split("=", 1)[1]).name.split(".")[0] + ".jsa")
    archive.write_bytes(small_archive)
    # A claim of the first environment's that nothing will ever promote (its last JVM).
    (cache / f"{archive.stem}.99999.claim").write_text(f"{_dead_pid()}\n")
    assert jvm_classes.archive_option(JARS, "", cache, first) == f"-XX:SharedArchiveFile={archive}"
    other = jvm_classes.archive_option(JARS, "", cache, second)
    assert other is not None and other.startswith("-XX:ArchiveClassesAtExit=")
    assert not other.split("=", 1)[1].startswith(str(cache / archive.stem))

    # The first environment is deleted: its archive goes with the next start.
    first.rmdir()
    jvm_classes.archive_option(JARS, "", cache, second)
    assert not archive.exists() and not archive.with_suffix(".classpath").exists()
    assert not list(cache.glob(f"{archive.stem}.*"))
    # An archive with no record (an older em-spark's) cannot be told apart: deleted too.
    stray = cache / "0123456789abcdef.jsa"
    stray.write_bytes(small_archive)
    jvm_classes.archive_option(JARS, "", cache, second)
    assert not stray.exists()
