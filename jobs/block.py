"""spark-submit entry point for the block job: `spark-submit jobs/block.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["block", *sys.argv[1:]])
