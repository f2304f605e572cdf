"""spark-submit entry point for the evaluate job: `spark-submit jobs/evaluate.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
