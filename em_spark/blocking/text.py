"""Column expressions that turn a record's attributes into normalized words and q-grams.

Everything here is a Spark SQL expression (no Python UDF), so it runs in the JVM and
over Spark Connect.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# Anything that is not a letter or a digit separates words ("TL-SG1005P" -> tl, sg1005p).
_SEPARATORS = r"[^\p{L}\p{N}]+"


def normalize(text: Column) -> Column:
    """Lower case, separators collapsed to one space, trimmed."""
    return F.trim(F.regexp_replace(F.lower(text), _SEPARATORS, " "))


def attribute_values(attributes: Column, names: list[str] | None, exclude: list[str]) -> Column:
    """The chosen attribute values as array<string> (missing values as empty strings).

    ``names=None`` takes every attribute except ``exclude``, in the map's (ingest) order.
    """
    if names is not None:
        chosen = [n for n in names if n not in exclude]
        return F.array(*[F.coalesce(attributes.getItem(n), F.lit("")) for n in chosen])
    kept = F.map_filter(attributes, lambda k, _v: ~k.isin(*exclude)) if exclude else attributes
    return F.transform(F.map_values(kept), lambda v: F.coalesce(v, F.lit("")))


def words(values: Column, max_per_value: int | None = None) -> Column:
    """Normalized word tokens of every value, the first ``max_per_value`` of each."""

    def split(v: Column) -> Column:
        tokens = F.filter(F.split(normalize(v), " "), lambda t: F.length(t) > 0)
        return F.slice(tokens, 1, max_per_value) if max_per_value else tokens

    return F.flatten(F.transform(values, split))


def qgrams(tokens: Column, q: int) -> Column:
    """Character q-grams of each token padded with spaces (" ab" "abc" ... "yz ").

    Padding makes the first and last characters count, like scikit-learn's ``char_wb``.
    """

    def grams(t: Column) -> Column:
        padded = F.concat(F.lit(" "), t, F.lit(" "))
        n = F.greatest(F.length(padded) - q + 1, F.lit(1))
        return F.transform(F.sequence(F.lit(1), n), lambda i: F.substring(padded, i, q))

    return F.flatten(F.transform(tokens, grams))


def is_code(token: Column) -> Column:
    """A token with a digit in it: model numbers, codes, phone parts."""
    return token.rlike(r"\p{N}")
