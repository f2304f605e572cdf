"""spark-submit entry point for the train job: `spark-submit jobs/train.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
