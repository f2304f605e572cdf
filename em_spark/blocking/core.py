"""Candidate generation: configurable blockers, combined by union, in DataFrame code.

Every blocker yields pairs (left_id, right_id) in the output orientation: link mode pairs
a left record with a right one; dedupe mode pairs two records of the one table, each
unordered pair once, smaller id (string order) on the left, never a record with itself.

Two families:
- key blockers (tokens, MinHash bands, sorted-neighbourhood positions) pair the records
  that share a key. A key held by too many records is dropped (the cap) and reported, so
  one heavy-hitter value cannot turn the join into a cross product.
- top-k blockers (TF-IDF, embeddings) give each record its k best-scoring partners, so a
  record without a rare token still gets candidates.

``only_involving`` restricts the work to pairs with at least one side in a given set:
every join is split into (involved x all) + (not involved x involved) instead of
computing all pairs and filtering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from em_spark.blocking import text
from em_spark.blocking.prepared import LEFT, RIGHT, Prepared, RecordNumbers, oriented, searched_pairs
from em_spark.blocking.search import SparseScorer, pair_scores, search
from em_spark.blocking.vectors import key_counts, record_terms, record_vectors
from em_spark.config import BlockConf, KeyCapConf, MinHashConf, SortedNeighbourhoodConf, TopKConf
from em_spark.errors import ConfigError
from em_spark.tables import pair_id_col

MODES = ("link", "dedupe")


@dataclass
class BlockingPlan:
    """Lazy DataFrames: the candidates, and per key blocker its key statistics
    (key, records, pairs, dropped) for the report."""

    candidates: DataFrame
    key_stats: dict[str, DataFrame] = field(default_factory=dict)
    caps: dict[str, int] = field(default_factory=dict)  # blocker -> records per key allowed
    prepared: Prepared | None = None


def candidate_pairs(
    records: DataFrame, conf: BlockConf, mode: str, only_involving: DataFrame | None = None
) -> DataFrame:
    """Candidate pairs of ``records`` (records contract) as pair_id, left_id, right_id,
    blockers (sorted array<string>), score (TF-IDF cosine of the two records).

    ``only_involving`` (source, record_id): only pairs with at least one side in it.
    """
    return plan_blocking(records, conf, mode, only_involving).candidates


def plan_blocking(
    records: DataFrame, conf: BlockConf, mode: str, only_involving: DataFrame | None = None
) -> BlockingPlan:
    if mode not in MODES:
        raise ConfigError(f"mode: expected one of {MODES}, got {mode!r}")
    prep = _prepare(records, mode, only_involving, conf.exclude_attributes)
    parts: list[DataFrame] = []
    stats: dict[str, DataFrame] = {}
    # The terms are read by the term counts, the pair terms, the vectors and the token
    # keys; the vectors by the top-k search and the final scores: each computed once.
    tokens = conf.tokens if conf.tokens.enabled else None
    terms = record_terms(prep.rec, conf.topk, prep.exclude, tokens).localCheckpoint()
    tfidf = record_vectors(prep, conf.topk, terms, _cap_limit(conf.topk.cap, prep))
    vectors, n_terms = tfidf.vectors.localCheckpoint(), tfidf.n_terms
    # Every blocker's pairs as their keys (prepared.RecordNumbers).
    if tokens:
        keys = terms.select("source", "rid", "is_new", F.explode("tk").alias("key"))
        pairs, stats["tokens"] = _key_pairs(prep, keys, tokens.cap)
        parts.append(_flagged(prep.numbers.keyed(pairs), "tokens"))
    if conf.topk.enabled:
        pairs, stats["topk"] = _tfidf_topk(prep, tfidf.counts, vectors, n_terms, conf.topk)
        parts.append(_flagged(pairs, "topk"))
    if conf.minhash.enabled:
        keys = _minhash_keys(prep, conf.minhash)
        pairs, stats["minhash"] = _key_pairs(prep, keys, conf.minhash.cap)
        parts.append(_flagged(prep.numbers.keyed(pairs), "minhash"))
    if conf.sorted_neighbourhood.enabled:
        pairs = _sorted_neighbourhood(prep, conf.sorted_neighbourhood)
        parts.append(_flagged(prep.numbers.keyed(pairs), "sorted_neighbourhood"))
    if conf.embedding.enabled:
        from em_spark.blocking.embedding import embedding_topk

        parts.append(_flagged(embedding_topk(prep, conf.embedding), "embedding"))
    if not parts:
        raise ConfigError("block: every blocker is disabled; enable at least one")

    # Only top-k pairs come with their score.
    no_score = F.lit(None).cast("double")
    parts = [p if "topk_score" in p.columns else p.withColumn("topk_score", no_score) for p in parts]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    pairs = union.groupBy("key").agg(F.bit_or("flag").alias("flags"), F.max("topk_score").alias("topk_score"))
    candidates = _with_score(pairs, vectors, n_terms, prep).select(
        pair_id_col("left_id", "right_id").alias("pair_id"),
        "left_id",
        "right_id",
        _blocker_names(F.col("flags")).alias("blockers"),
        "score",
    )
    caps = {
        name: _cap_limit(getattr(conf, name).cap, prep) for name in ("tokens", "topk", "minhash") if name in stats
    }
    return BlockingPlan(candidates, stats, caps, prep)


# The blockers, in name order. While the pairs of all blockers are grouped, each pair's
# blockers are bit flags (a hash aggregation; a set of names is aggregated by sorting).
BLOCKERS = ("embedding", "minhash", "sorted_neighbourhood", "tokens", "topk")


def _flagged(pairs: DataFrame, blocker: str) -> DataFrame:
    return pairs.withColumn("flag", F.lit(1 << BLOCKERS.index(blocker)))


def _blocker_names(flags: Column) -> Column:
    """The sorted array of the names of the blockers set in ``flags``."""
    names = [F.when(flags.bitwiseAND(1 << i) != 0, F.lit(name)) for i, name in enumerate(BLOCKERS)]
    return F.array_compact(F.array(*names))


# --- preparation -----------------------------------------------------------------------


def _prepare(
    records: DataFrame, mode: str, only_involving: DataFrame | None, exclude: list[str]
) -> Prepared:
    rec = records.select("source", F.col("record_id").alias("rid"), "attributes")
    if mode == "dedupe":
        # Dedupe blocks one table: ingest writes it as source 'left'.
        rec = rec.where(F.col("source") == LEFT)
    if only_involving is not None:
        marks = only_involving.select(
            "source", F.col("record_id").alias("rid"), F.lit(True).alias("is_new")
        ).distinct()
        rec = rec.join(marks, ["source", "rid"], "left").withColumn(
            "is_new", F.coalesce("is_new", F.lit(False))
        )
    else:
        rec = rec.withColumn("is_new", F.lit(True))
    return Prepared(
        rec=rec,
        mode=mode,
        numbers=RecordNumbers.collect(rec, mode),
        involving=only_involving is not None,
        exclude=list(exclude),
    )


def _values(prep: Prepared, names: list[str] | None) -> Column:
    return text.attribute_values(F.col("attributes"), names, prep.exclude)


def _cap_limit(cap: KeyCapConf, prep: Prepared) -> int:
    return max(2, min(cap.max_records, int(cap.max_share * prep.n_records)))


def _sides(df: DataFrame, prep: Prepared) -> tuple[DataFrame, DataFrame]:
    """(query side, candidate side) of ``df`` (columns source, rid, is_new, ...), renamed."""

    def named(d: DataFrame, s: str) -> DataFrame:
        return d.select(
            *[F.col(c).alias(f"{c}_{s}") if c in ("rid", "is_new") else F.col(c) for c in d.columns if c != "source"]
        )

    if prep.mode == "link":
        return named(df.where(F.col("source") == LEFT), "l"), named(df.where(F.col("source") == RIGHT), "r")
    return named(df, "l"), named(df, "r")


def _involving_join(a: DataFrame, b: DataFrame, on: str | list[str], prep: Prepared) -> DataFrame:
    """a JOIN b, limited to rows with at least one involved side when ``only_involving``.

    Split as (involved a x all b) + (other a x involved b): disjoint, and no pair outside
    the involved set is ever formed.
    """
    if not prep.involving:
        return a.join(b, on)
    first = a.where(F.col("is_new_l")).join(b, on)
    second = a.where(~F.col("is_new_l")).join(b.where(F.col("is_new_r")), on)
    return first.unionByName(second)


# --- key blockers ----------------------------------------------------------------------


def _key_pairs(prep: Prepared, keys: DataFrame, cap: KeyCapConf) -> tuple[DataFrame, DataFrame]:
    """Pairs of records sharing a key (source, rid, is_new, key: a row per record and
    key), under the cap."""
    # Checkpointed: both the statistics and the join read the keys.
    keys = keys.localCheckpoint()
    stats = _key_stats(key_counts(keys), prep, _cap_limit(cap, prep)).localCheckpoint()
    kept = keys.join(stats.where(~F.col("dropped") & (F.col("pairs") > 0)).select("key"), "key", "left_semi")
    a, b = _sides(kept, prep)
    joined = _involving_join(a, b, "key", prep)
    if prep.mode == "dedupe" and not prep.involving:
        joined = joined.where(F.col("rid_l") < F.col("rid_r"))
    return oriented(joined, prep).distinct(), stats


def _key_stats(counts: DataFrame, prep: Prepared, limit: int) -> DataFrame:
    """Per key held by 2+ records (``counts``: key, records, n_left, n_right): the records
    holding it, the pairs it would make, and whether the cap drops it."""
    if prep.mode == "link":
        pairs = F.col("n_left").cast("long") * F.col("n_right")
    else:
        pairs = F.col("records").cast("long") * (F.col("records") - 1) / 2
    return counts.where(F.col("records") >= 2).select(
        "key",
        "records",
        pairs.cast("long").alias("pairs"),
        (F.col("records") > F.lit(limit)).alias("dropped"),
    )


def _minhash_keys(prep: Prepared, conf: MinHashConf) -> DataFrame:
    """Band keys "band:hash(r minhashes)": records agreeing on all r rows of a band meet."""
    tokens = text.words(_values(prep, conf.attributes))
    shingles = F.array_distinct(text.qgrams(tokens, conf.qgram) if conf.qgram else tokens)
    with_sh = prep.rec.select("source", "rid", "is_new", shingles.alias("sh")).where(F.size("sh") > 0)
    n = conf.bands * conf.rows
    # One hash function per row: xxhash64 of the shingle salted with the row's seed.
    signature = [F.array_min(F.transform(F.col("sh"), _salted_hash(conf.seed * 1_000_003 + i))) for i in range(n)]
    bands = [
        F.concat_ws(":", F.lit(str(j)), F.xxhash64(*signature[j * conf.rows : (j + 1) * conf.rows]).cast("string"))
        for j in range(conf.bands)
    ]
    return with_sh.select("source", "rid", "is_new", F.explode(F.array(*bands)).alias("key"))


def _salted_hash(seed: int):
    # A one-argument lambda: Spark reads a second parameter as the element's index.
    return lambda t: F.xxhash64(t, F.lit(seed))


def _sorted_neighbourhood(prep: Prepared, conf: SortedNeighbourhoodConf) -> DataFrame:
    """Pairs less than ``window`` positions apart when all records are sorted by the key."""
    attrs = F.col("attributes")
    if conf.key is None:
        raw = F.coalesce(F.element_at(F.map_values(attrs), 1), F.lit(""))
    else:
        raw = F.concat_ws(" ", *[F.coalesce(attrs.getItem(k), F.lit("")) for k in conf.key])
    keyed = prep.rec.select("source", "rid", "is_new", text.normalize(raw).alias("sort_key")).where(
        F.col("sort_key") != ""
    )
    # One global order (ties broken by source and id, so the result is deterministic).
    ordered = keyed.withColumn("pos", F.row_number().over(Window.orderBy("sort_key", "source", "rid")))
    ahead = ordered.select(
        F.col("source").alias("source_l"),
        F.col("rid").alias("rid_l"),
        F.col("is_new").alias("is_new_l"),
        F.explode(F.sequence(F.col("pos") + 1, F.col("pos") + conf.window - 1)).alias("pos"),
    )
    behind = ordered.select(
        F.col("source").alias("source_r"), F.col("rid").alias("rid_r"), F.col("is_new").alias("is_new_r"), "pos"
    )
    joined = ahead.join(behind, "pos")
    if prep.involving:
        joined = joined.where(F.col("is_new_l") | F.col("is_new_r"))
    if prep.mode == "link":
        cross = joined.where(F.col("source_l") != F.col("source_r"))
        left_first = F.col("source_l") == LEFT
        return cross.select(
            F.when(left_first, F.col("rid_l")).otherwise(F.col("rid_r")).alias("left_id"),
            F.when(left_first, F.col("rid_r")).otherwise(F.col("rid_l")).alias("right_id"),
        ).distinct()
    return oriented(joined, prep).distinct()


# --- TF-IDF top-k ----------------------------------------------------------------------


def _tfidf_topk(
    prep: Prepared, counts: DataFrame, vectors: DataFrame, n_terms: int, conf: TopKConf
) -> tuple[DataFrame, DataFrame]:
    """(key, topk_score: the pair's full TF-IDF cosine), key stats. Not distinct: a pair
    found from both sides comes twice, and the union of all blockers groups them (one
    grouping, not two)."""
    limit = _cap_limit(conf.cap, prep)
    stats = _key_stats(counts, prep, limit).localCheckpoint()
    if prep.mode == "link":
        left, right = vectors.where(F.col("source") == LEFT), vectors.where(F.col("source") == RIGHT)
        if prep.involving:
            # match-new: each involved record's k best partners, ranked over every record.
            # An old record's own list is not re-ranked (that would re-score it against the
            # whole table): ranked only among the new records, it would keep every new
            # record sharing a term with it (measured: 4,034 candidates for 23 new DBLP-ACM
            # records, 175 each).
            directions = [(left.where("is_new"), right, conf.k, (LEFT, RIGHT)), (right.where("is_new"), left, conf.k, (RIGHT, LEFT))]
        else:
            directions = [(left, right, conf.k, (LEFT, RIGHT))]
            k_back = min(conf.k, conf.k * prep.n_left // max(prep.n_right, 1)) if conf.both_sides else 0
            if k_back >= 1:
                # Each right record's best left records, k scaled to add about k per left.
                directions.append((right, left, k_back, (RIGHT, LEFT)))
    else:
        queries = vectors.where("is_new") if prep.involving else vectors
        directions = [(queries, vectors, conf.k, (LEFT, LEFT))]
    found = [
        searched_pairs(search(q, c, SparseScorer(k, n_terms), prep.numbers, sides), sides, prep)
        for q, c, k, sides in directions
    ]
    return reduce(DataFrame.unionByName, found).withColumnRenamed("score", "topk_score"), stats


def _with_score(pairs: DataFrame, vectors: DataFrame, n_terms: int, prep: Prepared) -> DataFrame:
    """``pairs`` (key, flags, topk_score) as left_id, right_id, flags and score: each
    pair's full TF-IDF cosine (every term, capped ones included).

    A top-k pair comes with it (``topk_score``, from the search); a pair from another
    blocker only is scored from the two records' vectors.
    """
    right_source = RIGHT if prep.mode == "link" else LEFT

    def side(source: str, id_col: str, prefix: str) -> DataFrame:
        fields = [F.col(name).alias(prefix + name) for name in ("t", "w", "ct", "cw")]
        return vectors.where(F.col("source") == source).select(F.col("rid").alias(id_col), *fields)

    known = prep.numbers.pairs(
        pairs.where(F.col("topk_score").isNotNull()).select("key", "flags", F.round("topk_score", 6).alias("score")),
        "flags int, score double",
    )
    others = prep.numbers.pairs(pairs.where(F.col("topk_score").isNull()).select("key", "flags"), "flags int")
    # Every record has a vector row: inner joins, with the pairs as the build side, so
    # that the vectors are streamed, not shuffled.
    joined = side(LEFT, "left_id", "l_").join(F.broadcast(others), "left_id").join(
        side(right_source, "right_id", "r_"), "right_id"
    )
    scored = joined.mapInArrow(
        lambda batches: pair_scores(batches, n_terms), "left_id string, right_id string, flags int, score double"
    )
    return known.unionByName(scored.select("left_id", "right_id", "flags", F.round("score", 6).alias("score")))
