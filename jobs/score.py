"""spark-submit entry point for the score job: `spark-submit jobs/score.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["score", *sys.argv[1:]])
