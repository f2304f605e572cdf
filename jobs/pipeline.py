"""spark-submit entry point for the pipeline job: `spark-submit jobs/pipeline.py --config FILE [--set K=V]`."""

import sys

from em_spark.cli import main

if __name__ == "__main__":
    main(["pipeline", *sys.argv[1:]])
