"""em-spark: entity matching at Spark scale, with a verdict and a reason for every match."""

__version__ = "0.1.0"
