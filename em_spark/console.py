"""What the ``em-spark`` command prints: quiet by default, everything with ``--verbose``.

Quiet (the default once :func:`configure` has run, i.e. for every CLI command):

- Python logging: one line per finished job and per committed chunk, em-spark's own
  warnings, and errors; other libraries' log records below ERROR are dropped, and so are
  third-party Python warnings;
- no third-party progress bars (tqdm, Hugging Face, MLflow artifact downloads) and no
  MLflow event lines;
- Spark (see :mod:`em_spark.session`): log4j at ERROR from the JVM's start, no stage
  progress bars, and the JVM's own output (the ivy resolution of the Delta jars, log4j)
  in a file under ``<lakehouse root>/logs``;
- in the ``em-spark`` process itself, file descriptors 1 and 2 point at that log file
  too, while Python's ``sys.stdout`` / ``sys.stderr`` keep the console: what native code
  and child processes write (the JVM, the Python workers, the tokenizers library's
  trainer) goes to the log, what Python prints stays on the console;
- on a terminal, a transient progress line shows the running job, its latest log message,
  its committed chunks and the time it has taken.

``--verbose`` leaves all of this alone: every INFO line with a timestamp, Spark's WARN
lines and stage bars, ivy, library bars and warnings. Library use (``get_spark`` from a
notebook or the tests) gets the quiet Spark settings but keeps its own logging, warnings
and console output.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Set (if unset) before the libraries are imported, so that they, and the Python workers
# Spark starts, read them.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "TQDM_DISABLE": "1",
}

# Loggers whose INFO lines a quiet console shows (the bench tools report as they go).
_QUIET_INFO_LOGGERS = ("em_spark.console", "em_spark.bench")

log = logging.getLogger("em_spark.console")


@dataclass
class _State:
    configured: bool = False
    verbose: bool = False
    quiet: bool = False  # --quiet: warnings and errors only
    job_lines: bool = True  # a line per finished job (off when the command prints its own)
    capture_native: bool = False  # fds 1 and 2 to the log file once its folder is known
    log_dir: Path | None = None
    log_file: Path | None = None  # where fds 1 and 2 point, once captured


STATE = _State()


def configure(
    verbose: bool = False, quiet: bool = False, job_lines: bool = True, capture_native: bool = False
) -> None:
    """Set up the console of a CLI process (call once, before the heavy imports).
    ``capture_native``: this process is the em-spark command itself (not a caller's
    process), so its fds 1 and 2 may move to the log file (see :func:`use_log_dir`)."""
    STATE.configured, STATE.verbose, STATE.quiet, STATE.job_lines = True, verbose, quiet, job_lines
    STATE.capture_native = capture_native and not verbose
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ConsoleHandler):
            root.removeHandler(handler)
    if verbose:
        logging.basicConfig(
            level=logging.WARNING if quiet else logging.INFO,
            format="%(asctime)s em-spark %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
        )
        for noisy in ("py4j", "httpx", "urllib3", "mlflow", "alembic", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handler = ConsoleHandler()
    handler.addFilter(QuietFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("em_spark").setLevel(logging.INFO)
    for noisy in ("py4j", "httpx", "urllib3", "alembic", "matplotlib", "transformers", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"em_spark(\..*)?$")
    # ... except ResourceWarnings, which the garbage collector pins on whatever code runs
    warnings.filterwarnings("ignore", category=ResourceWarning)
    atexit.register(stop_spinner)


def verbose() -> bool:
    return STATE.verbose


def quiet_console() -> bool:
    """True in a CLI process without --verbose (library use is not a console)."""
    return STATE.configured and not STATE.verbose


def use_log_dir(root: str | os.PathLike | None) -> None:
    """The JVM's output of a quiet CLI process goes to ``<root>/logs`` (a local root only)."""
    if not quiet_console() or root is None:
        return
    text = str(root)
    if "://" in text or text.startswith("dbfs:"):
        return
    STATE.log_dir = Path(text) / "logs"
    if STATE.capture_native and STATE.log_file is None:
        _capture_native(new_log_file("em-spark"))


def captured_log() -> Path | None:
    """The log file fds 1 and 2 point at, when this process captured them."""
    return STATE.log_file


def _reopen(stream, fd: int):
    """A text stream like ``stream`` over ``fd``."""
    import io

    write_through = bool(getattr(stream, "write_through", False))
    raw = io.FileIO(fd, "w", closefd=True)
    return io.TextIOWrapper(
        raw if write_through else io.BufferedWriter(raw),
        encoding=getattr(stream, "encoding", None) or "utf-8",
        errors=getattr(stream, "errors", None) or "backslashreplace",
        line_buffering=bool(getattr(stream, "line_buffering", False)),
        write_through=write_through,
    )


def _capture_native(path: Path | None) -> None:
    if path is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except Exception:  # noqa: BLE001 - not real files (a notebook, a test harness): leave them
        return
    if (out_fd, err_fd) != (1, 2):
        return
    console_out, console_err = _reopen(sys.stdout, os.dup(1)), _reopen(sys.stderr, os.dup(2))
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    sys.stdout, sys.stderr = console_out, console_err
    STATE.log_file = path


def new_log_file(prefix: str) -> Path | None:
    """A fresh log file under the configured log folder, or None where there is none."""
    if STATE.log_dir is None:
        return None
    STATE.log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return STATE.log_dir / f"{prefix}-{stamp}-{os.getpid()}.log"


def say(message: str) -> None:
    """One line for the person at the console (quiet or verbose; in library use, the
    caller's logging setup decides)."""
    log.info(message)


def log4j_properties(level: str) -> Path:
    """A log4j2 configuration: everything at ``level`` to stderr (written once, atomically)."""
    level = level.lower()
    text = "\n".join(
        [
            "# written by em-spark (em_spark/console.py): Spark's log at " + level,
            f"rootLogger.level = {level}",
            "rootLogger.appenderRef.stderr.ref = console",
            "appender.console.type = Console",
            "appender.console.name = console",
            "appender.console.target = SYSTEM_ERR",
            "appender.console.layout.type = PatternLayout",
            "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex",
            # Spark gives a shell (pyspark's gateway counts as one) this logger's level, or
            # WARN with a "Setting default log level" line when it has none.
            "logger.pygateway.name = org.apache.spark.api.python.PythonGatewayServer",
            f"logger.pygateway.level = {level}",
            "logger.repl.name = org.apache.spark.repl.Main",
            f"logger.repl.level = {level}",
            "",
        ]
    )
    folder = STATE.log_dir or Path(tempfile.gettempdir()) / f"em-spark-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"log4j2-{level}.properties").resolve()
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


@contextmanager
def fds_to_file(path: Path | None) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``path`` for the block (a child started inside,
    such as Spark's JVM, keeps writing there); a no-op for None."""
    if path is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or odd stream
            pass
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def last_error_line(path: Path | None) -> str:
    """The most telling line of a JVM log (an unresolved dependency, an exception)."""
    if path is None or not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    for needle in ("unresolved dependency", "Exception", "Error", "ERROR"):
        for line in reversed(lines):
            if needle in line:
                return line[:300]
    return lines[-1][:300] if lines else ""


def quiet_libraries() -> None:
    """Silence what environment variables set too late cannot (libraries already imported,
    MLflow's event lines such as "Successfully registered model")."""
    if not quiet_console():
        return
    try:
        from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

        # MLflow re-enables its stream after some calls (logging_utils.enable_logging), so
        # instance attributes shadow its write/flush for good.
        MLFLOW_LOGGING_STREAM.write = len
        MLFLOW_LOGGING_STREAM.flush = lambda: None
    except Exception:  # noqa: BLE001 - mlflow missing or changed: its lines stay
        pass
    try:
        # PySpark logs a failed query as a JSON record of many kilobytes; the error itself
        # is raised, and the CLI prints it in one line.
        from pyspark.logger import PySparkLogger

        for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
            PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)
    except Exception:  # noqa: BLE001
        pass
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except Exception:  # noqa: BLE001
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:  # noqa: BLE001
            pass


# --- the quiet console's log lines --------------------------------------------------------


def _job_done_line(record: logging.LogRecord) -> str | None:
    """``runs``'s "<job>: run <id> succeeded in <s>s <counts>" as one short line."""
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) != 4 or not isinstance(args[3], dict):
        return None
    job, _run_id, seconds, counts = args
    figures = ", ".join(f"{k}={v}" for k, v in counts.items())
    return f"{job:<9} done in {float(seconds):6.1f} s  {figures}"


class QuietFilter(logging.Filter):
    """Which records a quiet console shows (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        ours = name == "em_spark" or name.startswith("em_spark.")
        if record.levelno >= logging.ERROR:
            return True
        if record.levelno >= logging.WARNING:
            return ours
        if STATE.quiet or not ours:
            return False
        template = str(record.msg)
        if name == "em_spark.pipeline" and "starting" in template:
            _spin_job(record)
            return False
        if name == "em_spark.runs" and "succeeded" in template:
            stop_spinner()
            if not STATE.job_lines:
                return False
            line = _job_done_line(record)
            if line is not None:
                record.msg, record.args = line, None
            return True
        _spin_record(record)
        return "chunk" in template or name.startswith(_QUIET_INFO_LOGGERS)


class ConsoleHandler(logging.StreamHandler):
    """Plain lines on the current sys.stderr (a spinner, when shown, stays below them)."""

    def __init__(self) -> None:
        super().__init__(stream=sys.stderr)
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        # Follow redirections (pytest, rich's Live). Not setStream: it flushes the old
        # stream, which a finished redirection (a test's capture) has already closed.
        self.stream = sys.stderr
        super().emit(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        # An error stays one line; --verbose (or --debug) shows tracebacks.
        return message.splitlines()[0] if message else message


# --- a transient progress line on a terminal ----------------------------------------------

_progress = None  # (rich Progress, task id) while a job runs on a terminal
_spinner_job = ""


def _tty() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except Exception:  # noqa: BLE001
        return False


def _spin_job(record: logging.LogRecord) -> None:
    """A job started: show its name, a bar (a pulse until chunks are counted), the time."""
    global _progress, _spinner_job
    args = record.args if isinstance(record.args, tuple) else ()
    _spinner_job = str(args[0]) if args else "job"
    stop_spinner()
    if not _tty():
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = progress.add_task(_spinner_job, total=None)
        progress.start()
        _progress = (progress, task)
    except Exception:  # noqa: BLE001 - no progress line then
        _progress = None


def _spin_record(record: logging.LogRecord) -> None:
    """Show an INFO line of the running job in its progress line; count its chunks."""
    if _progress is None:
        return
    progress, task = _progress
    try:
        text = record.getMessage().splitlines()[0]
        if text.startswith(f"{_spinner_job}: "):
            text = text[len(_spinner_job) + 2 :]
        progress.update(task, description=f"{_spinner_job}: {text[:70]}")
        args = record.args if isinstance(record.args, tuple) else ()
        if "chunk %d/%d" in str(record.msg) and len(args) >= 2:
            progress.update(task, completed=int(args[0]), total=int(args[1]))
    except Exception:  # noqa: BLE001
        pass


def stop_spinner() -> None:
    global _progress
    if _progress is not None:
        try:
            _progress[0].stop()
        except Exception:  # noqa: BLE001
            pass
        _progress = None
