"""Attribute values as text: the one cleaning that serialization (em_spark.serialize),
the similarity features (em_spark.similarity), the rules teacher and the rationale checker
share, so that each sees a value the same way (no pyspark import, no dependencies)."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def clean_value(value: object) -> str:
    """A value as one line of text: None -> '', whitespace (newlines too) collapsed."""
    if value is None:
        return ""
    return _SPACE.sub(" ", str(value)).strip()
