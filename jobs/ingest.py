"""spark-submit entry point for the ingest job: `spark-submit jobs/ingest.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
