"""Spark pandas UDFs: thin bindings of em_spark predictors, one model load per worker."""
