"""spark-submit entry point for the resolve job: `spark-submit jobs/resolve.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["resolve", *sys.argv[1:]])
