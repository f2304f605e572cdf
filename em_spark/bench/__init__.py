"""Benchmarks behind ``em-spark bench NAME``: each writes one JSON file."""
