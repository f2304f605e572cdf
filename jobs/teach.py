"""spark-submit entry point for the teach job: `spark-submit jobs/teach.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["teach", *sys.argv[1:]])
