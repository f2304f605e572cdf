"""The ``em-spark`` command: one subcommand per job, plus demo, bench and sql.

Errors the user can fix print one line and exit 2; anything else prints one line
(``--debug`` shows the traceback) and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from em_spark import console
from em_spark.config import Config, load_config
from em_spark.errors import EmError
from em_spark.pipeline import PIPELINE, STAGES

BENCHES = {
    "blocking": "em_spark.bench.blocking",
    "matching": "em_spark.bench.matching",
    "scoring": "em_spark.bench.scoring",
    "rationales": "em_spark.bench.rationales",
}

log = logging.getLogger("em_spark")

_VERBOSE_HELP = "show everything: Spark's log and stage bars, ivy, library progress bars and warnings"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set block.topk.k=10 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="em-spark",
        description="Entity matching on Spark + Delta with a verdict and a reason for every match.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    parser.add_argument("--verbose", "-v", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for job in STAGES:
        p = sub.add_parser(job, help=f"run the {job} job")
        _add_config_args(p)
        if job == "teach":
            p.add_argument(
                "--predict",
                action="store_true",
                help="label-free bootstrap: ask the teacher for labels of unlabeled candidates",
            )
    p = sub.add_parser("pipeline", help="run every job in order: " + " -> ".join(PIPELINE))
    _add_config_args(p)
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded demo dataset")
    _add_config_args(p)
    p.add_argument("--root", default=None, help="lakehouse folder (default ./lakehouse)")
    p.add_argument("--fast", action="store_true", help="smaller training budget (for CI)")
    p = sub.add_parser("config", help="print the effective config (defaults + file + --set) as YAML")
    _add_config_args(p)
    p = sub.add_parser(
        "match-new",
        help="match new records into the existing tables: block, score and resolve only what they touch",
    )
    _add_config_args(p)
    p.add_argument("--records", required=True, help="a CSV / Parquet / Delta path or a catalog table")
    p.add_argument("--source", default="left", choices=["left", "right"], help="which table they join (default left)")
    p.add_argument("--format", choices=["csv", "parquet", "delta", "table"], help="default: from the path")
    p.add_argument("--id-column", help="default: the ingest setting of that source, else 'id'")
    p = sub.add_parser("sql", help="run a SQL query over the em-spark tables and views")
    _add_config_args(p)
    p.add_argument("query")
    p.add_argument(
        "--format", choices=["table", "csv", "json"], default="table",
        help="table: plain text for reading; csv: with a header row; json: one object per line "
        "(every format prints values whole; default table)",
    )
    p.add_argument(
        "--limit", type=int, default=None,
        help="at most N rows (default: 1000 for table, all for csv and json; 0: all)",
    )
    p = sub.add_parser("bench", help="benchmarks that write JSON: " + ", ".join(BENCHES))
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    # --verbose after the command too (SUPPRESS: an absent flag keeps the top-level value).
    for command_parser in sub.choices.values():
        command_parser.add_argument(
            "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )
    return parser


def _setup_logging(args: argparse.Namespace, standalone: bool = False) -> None:
    """Quiet by default: a line per job and chunk, Spark's and the libraries' output in
    <lakehouse>/logs or nowhere; --verbose shows all of it (em_spark/console.py)."""
    console.configure(
        verbose=bool(getattr(args, "verbose", False)),
        quiet=args.quiet,
        # single jobs print their own result line
        job_lines=args.command not in STAGES,
        # the em-spark process itself (not main() called from a caller's process)
        capture_native=standalone,
    )


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "bench":
        module = importlib.import_module(BENCHES[args.name])
        return int(module.main(args.args) or 0)
    if command == "demo":
        from em_spark.demo import run_demo

        run_demo(root=args.root, overrides=args.overrides, config_path=args.config, fast=args.fast)
        return 0
    config = _config(args)
    console.use_log_dir(config.lakehouse.root)
    if command == "config":
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if command == "match-new":
        from em_spark.incremental import NewRecords, match_new

        new = NewRecords(args.records, args.source, args.format, args.id_column)
        run = match_new(config, new)
        print(f"match-new: run {run.run_id} succeeded {run.counts}")
        return 0
    if command == "sql":
        from em_spark.sql import run_sql

        run_sql(config, args.query, limit=args.limit, fmt=args.format)
        return 0
    from em_spark.pipeline import run_job, run_pipeline

    if command == "pipeline":
        run_pipeline(config)
        return 0
    if command == "teach" and getattr(args, "predict", False):
        config.teach = config.teach.model_copy(update={"predict": True})
    run = run_job(command, config)
    print(f"{command}: run {run.run_id} succeeded {run.counts}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args, standalone=argv is None)
    try:
        code = dispatch(args)
    except EmError as exc:
        print(f"em-spark {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"em-spark {args.command}: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"em-spark {args.command}: failed: {type(exc).__name__}: {first} (--debug for details)",
            file=sys.stderr,
        )
        code = 1
    if __name__ == "__main__" or argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
