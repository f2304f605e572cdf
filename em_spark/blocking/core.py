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
from em_spark.blocking.search import SparseScorer, TopKBounds, pair_scores, search
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
    stats: dict[str, DataFrame] = {}
    # The terms are read by the term counts, the pair terms, the vectors and the token
    # keys; the vectors by the top-k search and the final scores: each computed once.
    tokens = conf.tokens if conf.tokens.enabled else None
    terms = record_terms(prep.rec, conf.topk, prep.exclude, tokens).localCheckpoint()
    tfidf = record_vectors(prep, conf.topk, terms, _cap_limit(conf.topk.cap, prep))
    vectors, n_terms = tfidf.vectors.localCheckpoint(), tfidf.n_terms
    # The top-k pairs (key, topk_score) and every other blocker's (key, flag), as their
    # keys (prepared.RecordNumbers).
    topk, others = None, []
    if conf.topk.enabled:
        topk, stats["topk"] = _tfidf_topk(prep, tfidf.counts, vectors, n_terms, conf.topk)
    if tokens:
        keys = terms.select("source", "rid", "is_new", F.explode("tk").alias("key"))
        pairs, stats["tokens"] = _key_pairs(prep, keys, tokens.cap)
        others.append(_flagged(prep.numbers.keyed(pairs), "tokens"))
    if conf.minhash.enabled:
        keys = _minhash_keys(prep, conf.minhash)
        pairs, stats["minhash"] = _key_pairs(prep, keys, conf.minhash.cap)
        others.append(_flagged(prep.numbers.keyed(pairs), "minhash"))
    if conf.sorted_neighbourhood.enabled:
        pairs = _sorted_neighbourhood(prep, conf.sorted_neighbourhood)
        others.append(_flagged(prep.numbers.keyed(pairs), "sorted_neighbourhood"))
    if conf.embedding.enabled:
        from em_spark.blocking.embedding import embedding_topk

        others.append(_flagged(embedding_topk(prep, conf.embedding), "embedding"))
    if topk is None and not others:
        raise ConfigError("block: every blocker is disabled; enable at least one")

    other = reduce(DataFrame.unionByName, others).groupBy("key").agg(F.bit_or("flag").alias("flags")) if others else None
    candidates = _with_score(*_merged(topk, other), vectors, n_terms, prep).select(
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


# The blockers, in name order. While the pairs of the blockers are merged, each pair's
# blockers are bit flags (a hash aggregation; a set of names is aggregated by sorting).
BLOCKERS = ("embedding", "minhash", "sorted_neighbourhood", "tokens", "topk")
# The other blockers' pairs go to every task of the merge when there are at most this many
# (12 bytes each); more are shuffled with the top-k pairs.
BROADCAST_PAIRS = 5_000_000


def _flag(blocker: str) -> int:
    return 1 << BLOCKERS.index(blocker)


def _flagged(pairs: DataFrame, blocker: str) -> DataFrame:
    return pairs.withColumn("flag", F.lit(_flag(blocker)))


def _merged(topk: DataFrame | None, other: DataFrame | None) -> tuple[DataFrame | None, DataFrame | None]:
    """The union of the distinct top-k pairs (key, topk_score; materialized: read twice)
    and the other blockers' (key, flags), in two parts: the top-k pairs with every
    blocker's flags (key, flags, topk_score), and the other pairs the top-k did not find
    (key, flags). Apart, so that neither is computed again for the other.

    The top-k pairs are the many: each is looked up among the others (a broadcast join
    where they are few)."""
    if other is None:
        return topk.select("key", F.lit(_flag("topk")).alias("flags"), "topk_score"), None
    if topk is None:
        return None, other
    other = other.localCheckpoint()
    side = F.broadcast(other) if other.count() <= BROADCAST_PAIRS else other
    flagged = topk.join(side.withColumnRenamed("flags", "other_flags"), "key", "left").select(
        "key", (F.coalesce("other_flags", F.lit(0)).bitwiseOR(F.lit(_flag("topk")))).alias("flags"), "topk_score"
    )
    found = topk.join(side.select("key"), "key", "left_semi")
    return flagged, other.join(found, "key", "left_anti")


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
    key), under the cap; a pair sharing several keys comes once per key (the merge of the
    blockers groups them)."""
    # Checkpointed: both the statistics and the join read the keys.
    keys = keys.localCheckpoint()
    stats = _key_stats(key_counts(keys), prep, _cap_limit(cap, prep)).localCheckpoint()
    kept = keys.join(stats.where(~F.col("dropped") & (F.col("pairs") > 0)).select("key"), "key", "left_semi")
    a, b = _sides(kept, prep)
    joined = _involving_join(a, b, "key", prep)
    if prep.mode == "dedupe" and not prep.involving:
        joined = joined.where(F.col("rid_l") < F.col("rid_r"))
    return oriented(joined, prep), stats


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
    """(key, topk_score: the pair's full TF-IDF cosine), distinct and materialized; key
    stats."""
    limit = _cap_limit(conf.cap, prep)
    stats = _key_stats(counts, prep, limit).localCheckpoint()

    def searched(queries: DataFrame, candidates: DataFrame, scorer: SparseScorer, sides: tuple[str, str]) -> DataFrame:
        return search(queries, candidates, scorer, prep.numbers, sides)

    def keyed(found: DataFrame, sides: tuple[str, str]) -> DataFrame:
        return searched_pairs(found, sides, prep).withColumnRenamed("score", "topk_score")

    left, right = vectors.where(F.col("source") == LEFT), vectors.where(F.col("source") == RIGHT)
    k_back = min(conf.k, conf.k * prep.n_left // max(prep.n_right, 1)) if conf.both_sides else 0
    if prep.mode == "link" and not prep.involving:
        # Each left record's k best right ones, then each right record's best left ones,
        # k scaled to add about k per left, leaving out the pairs the left records kept:
        # distinct without a grouping.
        forward = searched(left, right, SparseScorer(conf.k, n_terms), (LEFT, RIGHT)).localCheckpoint()
        found = [keyed(forward, (LEFT, RIGHT))]
        if k_back >= 1:
            kept = TopKBounds.of(forward.where(F.col("bound") >= 0).select("q", "c", "bound").toArrow(), prep.n_left)
            backward = searched(right, left, SparseScorer(k_back, n_terms, kept), (RIGHT, LEFT)).localCheckpoint()
            found.append(keyed(backward, (RIGHT, LEFT)))
        # Both searches materialized once each (the forward one is not written again).
        return reduce(DataFrame.unionByName, found), stats
    if prep.mode == "link":
        # match-new: each involved record's k best partners, ranked over every record.
        # An old record's own list is not re-ranked (that would re-score it against the
        # whole table): ranked only among the new records, it would keep every new
        # record sharing a term with it (measured: 4,034 candidates for 23 new DBLP-ACM
        # records, 175 each).
        directions = [(left.where("is_new"), right, (LEFT, RIGHT)), (right.where("is_new"), left, (RIGHT, LEFT))]
    else:
        directions = [(vectors.where("is_new") if prep.involving else vectors, vectors, (LEFT, LEFT))]
    # A pair found from both sides comes twice, with the same score (the same products
    # summed in the same order).
    found = [keyed(searched(q, c, SparseScorer(conf.k, n_terms), sides), sides) for q, c, sides in directions]
    pairs = reduce(DataFrame.unionByName, found).groupBy("key").agg(F.max("topk_score").alias("topk_score"))
    return pairs.localCheckpoint(), stats


def _with_score(
    scored: DataFrame | None, unscored: DataFrame | None, vectors: DataFrame, n_terms: int, prep: Prepared
) -> DataFrame:
    """The pairs as left_id, right_id, flags and score: each pair's full TF-IDF cosine
    (every term, capped ones included). ``scored`` (key, flags, topk_score): the top-k
    pairs, which come with it from the search; ``unscored`` (key, flags): the other
    blockers' pairs, scored here from the two records' vectors."""
    right_source = RIGHT if prep.mode == "link" else LEFT

    def side(source: str, id_col: str, prefix: str) -> DataFrame:
        fields = [F.col(name).alias(prefix + name) for name in ("t", "w", "ct", "cw")]
        return vectors.where(F.col("source") == source).select(F.col("rid").alias(id_col), *fields)

    parts = []
    if scored is not None:
        rounded = scored.select("key", "flags", F.round("topk_score", 6).alias("score"))
        parts.append(prep.numbers.pairs(rounded, "flags int, score double"))
    if unscored is not None:
        others = prep.numbers.pairs(unscored.select("key", "flags"), "flags int")
        # Every record has a vector row: inner joins, with the pairs as the build side, so
        # that the vectors are streamed; only the right vectors of these pairs are shuffled.
        right = side(right_source, "right_id", "r_").join(F.broadcast(others.select("right_id")), "right_id", "left_semi")
        joined = side(LEFT, "left_id", "l_").join(F.broadcast(others), "left_id").join(right, "right_id")
        found = joined.mapInArrow(
            lambda batches: pair_scores(batches, n_terms), "left_id string, right_id string, flags int, score double"
        )
        parts.append(found.select("left_id", "right_id", "flags", F.round("score", 6).alias("score")))
    return reduce(DataFrame.unionByName, parts)
