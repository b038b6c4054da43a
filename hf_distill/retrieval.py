"""Retrieval over a whole corpus: corpus and query files, BM25, dense (faiss) and hybrid (RRF) first stages, a
reranker on top of a first stage, and the retrieval metrics nDCG@10, MRR@10, Recall@100 and MAP@100.

**Inputs.** A corpus is rows ``{"id", "text", "title"?}``, queries are rows ``{"id"?, "query", "positive_ids"?}``,
from a ``.jsonl`` or ``.parquet`` file, a ``datasets`` directory (``save_to_disk`` or a folder of data files) or
a Hub dataset name (:func:`read_corpus`, :func:`read_queries`). Ids may be strings or integers (integers are
read as their decimal string). The BEIR / MTEB retrieval layout reads as it is: ``corpus.jsonl`` rows
``{"_id", "title", "text"}``, ``queries.jsonl`` rows ``{"_id", "text"}`` and relevance judgements
``qrels/<split>.tsv`` (``query-id  corpus-id  score``; :func:`read_qrels`) passed as ``qrels`` to
:func:`read_queries`, which then keeps the queries judged in that file. A passage's text is ``"{title} {text}"`` when it has a title (the BEIR
convention), else ``text``; that text is what is retrieved, scored and written into mined rows. Every problem is
one :class:`~hf_distill.errors.DataFormatError` naming file, line (or ``row N``), field and fix: a duplicate id,
an empty text or query, a positive id that is not in the corpus.

**Memory.** The corpus is read row by row (a JSONL file line by line, Parquet in record batches) and kept once,
as its ids and passage texts; nothing else holds a copy. Dense encoding adds each batch's embeddings straight to
the faiss index (the only copy of the vectors); BM25 keeps bm25s' sparse score matrix. A corpus whose texts do
not fit in RAM is not supported: shard it and mine each shard, or fuse shard results yourself.

**First stages.** :class:`BM25Retriever` (``bm25s``), :class:`DenseRetriever` (any embedding scorer of this
project, e.g. :func:`hf_distill.evaluation.load_scorer` of a student; ``faiss-cpu``) and :class:`HybridRetriever`
(:func:`reciprocal_rank_fusion` of several). All return :class:`RetrievalResults`: ``indices [Q, k]`` into the
corpus (``-1`` where fewer than ``k`` passages were found) and their scores, best first. ``bm25s`` and
``faiss-cpu`` are optional: ``pip install "hf_distill[retrieval]"``.

**Metrics.** :func:`retrieval_metrics` follows ``trec_eval`` (as ``pytrec_eval`` runs it) with binary relevance
on the known positives; the test suite checks it against ``pytrec_eval`` to 1e-6.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data import RankingGroup, iter_rows
from .errors import ConfigError, DataFormatError, MissingDependencyError, NonFiniteScoreError, PeerProcessError
from .evaluation import metric_change
from .teachers import DEFAULT_MAX_TOKENS_PER_BATCH, Teacher, score_groups
from .teachers.runner import item_lengths, plan_batches, prepared_batches

logger = logging.getLogger("hf_distill")

RETRIEVAL_INSTALL = 'pip install "hf_distill[retrieval]"'
RETRIEVERS = ("bm25", "dense", "hybrid")
RETRIEVAL_KEYS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
RRF_K = 60
# Beyond this many passages an exact inner-product scan (one full pass over the corpus per query) gives way to
# an HNSW graph: at 10^6 x 384 floats a flat search costs ~0.4 GFLOP per query, which 10^4 queries on 2 cores
# feel; HNSW answers in well under a millisecond at recall ~0.99 (efSearch 128).
DEFAULT_HNSW_THRESHOLD = 1_000_000
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
ENCODE_CHUNK = 16384  # texts tokenized for their lengths and encoded per round: bounds the token-id memory


def _import_optional(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependencyError(
            f"{package} is not installed (needed for retrieval). Fix: {RETRIEVAL_INSTALL}"
        ) from None


# ---------------------------------------------------------------------------------------------------------
# Corpus and queries
# ---------------------------------------------------------------------------------------------------------


def _row_object(row: Any, source: str, place: str, fields: str) -> dict:
    if not isinstance(row, dict):
        raise DataFormatError(source, place, None, f"expected an object, got {type(row).__name__}", f"write {fields}")
    return row


def _read_id(value: Any, source: str, place: str, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(
            source,
            place,
            field_name,
            f"must be a string or an integer, got {type(value).__name__}",
            "give every row an id",
        )
    text = str(value)
    if not text.strip():
        raise DataFormatError(source, place, field_name, "is empty", "give every row a non-empty id")
    return text


def _read_text(row: dict, source: str, place: str, field_name: str, required: bool = True) -> str:
    value = row.get(field_name)
    if value is None and not required:
        return ""
    if value is None:
        raise DataFormatError(source, place, field_name, "is missing", f"add a non-empty '{field_name}'")
    if not isinstance(value, str):
        raise DataFormatError(
            source, place, field_name, f"must be a string, got {type(value).__name__}", f"write '{field_name}' as text"
        )
    if required and not value.strip():
        raise DataFormatError(
            source, place, field_name, "is empty or whitespace only", "remove the row or give it text"
        )
    return value


@dataclass
class Corpus:
    """The passages to retrieve from: ``ids[i]`` and ``texts[i]`` (``"{title} {text}"`` or ``text``)."""

    ids: list[str]
    texts: list[str]
    source: str = "<corpus>"
    position: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise ConfigError(f"a corpus needs one text per id, got {len(self.ids)} ids and {len(self.texts)} texts.")
        if not self.position:
            self.position = {passage_id: i for i, passage_id in enumerate(self.ids)}
        if len(self.position) != len(self.ids):
            raise DataFormatError(self.source, None, "id", "has duplicates", "give every passage its own id")

    def __len__(self) -> int:
        return len(self.ids)


def passage_text(title: str, text: str) -> str:
    """The text a passage is retrieved and scored as: ``"{title} {text}"`` with a title, else ``text``."""
    title = title.strip()
    return f"{title} {text}" if title else text


CORPUS_FIELDS = '{"id", "text", "title"?}'
QUERY_FIELDS = '{"id"?, "query", "positive_ids"?: [...]}'


def read_corpus(source: str | os.PathLike, split: str = "train") -> Corpus:
    """Read corpus rows ``{"id", "text", "title"?}`` (see the module docstring).

    Raises:
        DataFormatError: a missing or duplicate id (naming both places), an empty text, a non-string title, an
            empty corpus.
    """
    source = os.fspath(source)
    ids: list[str] = []
    texts: list[str] = []
    position: dict[str, int] = {}
    places: dict[int, str] = {}  # where each id was first seen, only to name it in a duplicate's error
    for place, raw in iter_rows(source, split):
        row = _row_object(raw, source, place, CORPUS_FIELDS)
        id_field = _id_field(row)
        if id_field is None:
            raise DataFormatError(source, place, "id", "is missing", f"give every passage an id ({CORPUS_FIELDS})")
        passage_id = _read_id(row[id_field], source, place, id_field)
        text = _read_text(row, source, place, "text")
        title = _read_text(row, source, place, "title", required=False)
        if passage_id in position:
            first = places.get(position[passage_id], "an earlier row")
            raise DataFormatError(
                source,
                place,
                "id",
                f"duplicate id {passage_id!r} (first at {first})",
                "give every passage its own id, or drop the repeated row",
            )
        position[passage_id] = len(ids)
        places[len(ids)] = place if not place.isdigit() else f"line {place}"
        ids.append(passage_id)
        texts.append(passage_text(title, text))
    if not ids:
        raise DataFormatError(
            source, None, None, "the corpus has no rows", f"write one {CORPUS_FIELDS} row per passage"
        )
    return Corpus(ids, texts, source, position)


@dataclass
class Query:
    """A query with the ids of its known relevant passages (``positive_ids``; empty when none are known)."""

    id: str
    text: str
    positive_ids: list[str] = field(default_factory=list)


def _id_field(row: dict) -> str | None:
    """``"id"``, or BEIR's ``"_id"`` in a row without ``id``; None when the row has neither."""
    for name in ("id", "_id"):
        if row.get(name) is not None:
            return name
    return None


def _check_in_corpus(
    corpus: Corpus | None, passage_id: str, source: str, place: str, field_name: str, fix: str
) -> None:
    """A passage id named by a query row or a judgement must be one of ``corpus``'s (no check without one)."""
    if corpus is not None and passage_id not in corpus.position:
        raise DataFormatError(source, place, field_name, f"id {passage_id!r} is not in the corpus {corpus.source}", fix)


QRELS_FIELDS = "query-id, corpus-id, score"


def read_qrels(source: str | os.PathLike, corpus: Corpus | None = None, split: str = "test") -> dict[str, list[str]]:
    """Relevance judgements as ``{query id: [relevant passage ids]}`` (score > 0; 0 and below are judged not
    relevant and dropped): BEIR's ``qrels/<split>.tsv`` (tab-separated ``query-id corpus-id score``, with or
    without that header line), or rows ``{"query-id", "corpus-id", "score"}`` from any source :func:`iter_rows`
    reads (JSONL, Parquet, a dataset dir, a Hub dataset such as MTEB's qrels configs).

    Raises:
        DataFormatError: a line without three fields, a score that is not a number, a passage id not in
            ``corpus``, no judgements.
    """
    source = os.fspath(source)
    judged: dict[str, list[str]] = {}

    def add(place: str, query_id: Any, passage_id: Any, score: Any) -> None:
        query_id = _read_id(query_id, source, place, "query-id")
        passage_id = _read_id(passage_id, source, place, "corpus-id")
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise DataFormatError(
                source, place, "score", f"must be a number, got {score!r}", "write the relevance as a number"
            ) from None
        _check_in_corpus(
            corpus,
            passage_id,
            source,
            place,
            "corpus-id",
            "use the corpus the judgements were made for, or drop the line",
        )
        positives = judged.setdefault(query_id, [])
        if value > 0 and passage_id not in positives:
            positives.append(passage_id)

    if os.path.isfile(source) and Path(source).suffix.lower() in (".tsv", ".txt"):
        with open(source, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if line_number == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
                    continue  # BEIR's header line
                if len(fields) == 4:  # TREC qrels: query-id 0 corpus-id score
                    fields = [fields[0], fields[2], fields[3]]
                if len(fields) != 3:
                    raise DataFormatError(
                        source,
                        f"line {line_number}",
                        None,
                        f"expected 3 tab-separated fields ({QRELS_FIELDS}), got {len(fields)}",
                        "write one judgement per line",
                    )
                add(f"line {line_number}", *(field_.strip() for field_ in fields))
    else:
        for place, raw in iter_rows(source, split):
            row = _row_object(raw, source, place, "{" + QRELS_FIELDS + "}")
            names = [next((n for n in (a, a.replace("-", "_")) if n in row), a) for a in ("query-id", "corpus-id")]
            for name in names:
                if row.get(name) is None:
                    raise DataFormatError(source, place, name, "is missing", f"write rows {{{QRELS_FIELDS}}}")
            add(place, row[names[0]], row[names[1]], row.get("score", 1))
    if not judged:
        raise DataFormatError(source, None, None, "there are no judgements", f"write one {QRELS_FIELDS} per line")
    return judged


def read_queries(
    source: str | os.PathLike,
    corpus: Corpus | None = None,
    split: str = "train",
    qrels: dict[str, list[str]] | None = None,
) -> list[Query]:
    """Read query rows ``{"id"?, "query", "positive_ids"?}`` (or BEIR's ``{"_id", "text"}``); a row without an
    id gets its place as id.

    With ``corpus``, every positive id must be one of its ids. With ``qrels`` (:func:`read_qrels`), only the
    queries judged there are kept (BEIR's ``queries.jsonl`` holds every split's queries), each with the judged
    relevant passages added to its ``positive_ids``.

    Raises:
        DataFormatError: an empty query, a duplicate query id, ``positive_ids`` not a list of ids, a positive id
            not in the corpus, no rows; a judged query id that no row has.
    """
    source = os.fspath(source)
    queries: list[Query] = []
    seen: set[str] = set()
    for place, raw in iter_rows(source, split):
        row = _row_object(raw, source, place, QUERY_FIELDS)
        text_field = "query" if "query" in row or "text" not in row else "text"
        text = _read_text(row, source, place, text_field)
        id_field = _id_field(row)
        query_id = _read_id(row[id_field], source, place, id_field) if id_field else f"{source}:{place}"
        if qrels is not None and query_id not in qrels:
            seen.add(query_id)
            continue
        if query_id in seen:
            raise DataFormatError(
                source, place, "id", f"duplicate query id {query_id!r}", "give every query its own id, or leave ids out"
            )
        seen.add(query_id)
        positives = row.get("positive_ids")
        if positives is None:
            positives = []
        if not isinstance(positives, (list, tuple)):
            raise DataFormatError(
                source,
                place,
                "positive_ids",
                f"must be a list of passage ids, got {type(positives).__name__}",
                'write "positive_ids": ["id", ...]',
            )
        positive_ids = []
        for i, value in enumerate(positives):
            positive_id = _read_id(value, source, place, f"positive_ids[{i}]")
            _check_in_corpus(
                corpus,
                positive_id,
                source,
                place,
                f"positive_ids[{i}]",
                "fix the id, add the passage to the corpus, or remove it from positive_ids",
            )
            if positive_id not in positive_ids:
                positive_ids.append(positive_id)
        if qrels is not None:
            positive_ids += [p for p in qrels[query_id] if p not in positive_ids]
        queries.append(Query(query_id, text, positive_ids))
    if qrels is not None:
        unknown = [query_id for query_id in qrels if query_id not in seen]
        if unknown:
            raise DataFormatError(
                source,
                None,
                "id",
                f"{len(unknown)} judged query id(s) have no query row, e.g. {unknown[0]!r}",
                "use the queries file the judgements were made for",
            )
        logger.info(
            "%s: %d of %d queries are judged in the qrels; the others are left out", source, len(queries), len(seen)
        )
    if not queries:
        raise DataFormatError(source, None, None, "there are no queries", f"write one {QUERY_FIELDS} row per query")
    return queries


def retrieval_task_from_groups(
    sets: dict[str, Sequence[RankingGroup]],
) -> tuple[list[dict[str, str]], dict[str, list[dict[str, Any]]]]:
    """A retrieval task from ranking groups: every distinct passage of every set becomes one corpus row
    ``{"id": "p<n>", "text"}`` (ids in first-seen order), and each group a query row ``{"id", "query",
    "positive_ids"}`` with its label-1 passages as positives (none when it has no labels). The sets share the
    corpus, so each is retrieved against all passages, as in BEIR."""
    ids: dict[str, str] = {}
    corpus_rows: list[dict[str, str]] = []
    query_rows: dict[str, list[dict[str, Any]]] = {}
    for name, groups in sets.items():
        query_rows[name] = []
        for g, group in enumerate(groups):
            for passage in group.passages:
                if passage not in ids:
                    ids[passage] = f"p{len(ids)}"
                    corpus_rows.append({"id": ids[passage], "text": passage})
            labels = group.labels or [0] * len(group.passages)
            positives = [ids[p] for p, label in zip(group.passages, labels) if label == 1]
            query_rows[name].append({"id": f"{name}-{g}", "query": group.query, "positive_ids": positives})
    return corpus_rows, query_rows


def write_retrieval_task(ranking_files: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> list[Path]:
    """:func:`retrieval_task_from_groups` of ranking files (any format :func:`hf_distill.data.read_groups` reads,
    e.g. MTEB rows), written as ``output_dir/corpus.jsonl`` and ``output_dir/<file stem>.jsonl`` per file;
    returns the paths written (corpus first)."""
    from .data import read_groups

    sets = {Path(path).stem: read_groups(path, require_scores=False) for path in ranking_files}
    corpus_rows, query_rows = retrieval_task_from_groups(sets)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in [("corpus", corpus_rows), *query_rows.items()]:
        path = output_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------------
# First stages
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RetrievalResults:
    """``indices [Q, k]`` (int64, into the corpus; ``-1`` pads a query with fewer than ``k`` results) and their
    ``scores [Q, k]`` (float32; ``-inf`` at padding), best first per query."""

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.scores[self.indices < 0] = -np.inf


class BM25Retriever:
    """BM25 over the corpus with ``bm25s`` (its ``lucene`` variant; English stop words removed, lower-cased,
    tokens ``\\w\\w+``, no stemming).

    For query ``q`` and passage ``d`` of length ``|d|`` tokens (average ``avgdl``, ``N`` passages, ``df(t)``
    passages containing ``t``)::

        BM25(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
        idf(t)     = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

    (Robertson & Zaragoza, *The Probabilistic Relevance Framework: BM25 and Beyond*, FnTIR 2009; the ``(k1 + 1)``
    factor of the original only scales every score and is left out, as Lucene does.) A passage sharing no term
    with the query scores 0 and is not returned.
    """

    name = "bm25"

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, progress: bool = False):
        bm25s = _import_optional("bm25s", "bm25s")
        from bm25s.tokenization import Tokenizer

        self.num_passages = len(texts)
        self.tokenizer = Tokenizer(stopwords="en")
        tokens = self.tokenizer.tokenize(list(texts), return_as="ids", show_progress=progress)
        self.index = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.index.index(tokens, show_progress=progress)

    def search(self, queries: Sequence[str], k: int) -> RetrievalResults:
        """The ``k`` best passages per query (``-1`` beyond the passages that share a term with it)."""
        depth = min(k, self.num_passages)
        tokens = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        found, scores = self.index.retrieve(tokens, k=depth, show_progress=False, n_threads=0)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        values = np.full((len(queries), k), -np.inf, dtype=np.float32)
        matched = scores > 0
        indices[:, :depth] = np.where(matched, found, -1)
        values[:, :depth] = np.where(matched, scores, -np.inf)
        return RetrievalResults(indices, values)


class _ShareGatherer:
    """Data-parallel encoding: process ``rank`` of ``world_size`` encodes batches ``rank, rank + W, ...`` of each
    chunk's plan, and every process receives every batch (``all_gather_object`` over a CPU gloo group). A group this
    creates stays up for the rest of the process (later encodings and the teacher runner reuse it): under torchrun,
    a second ``init_process_group`` on the launcher's store after a ``destroy`` does not come up again."""

    def __init__(self, rank: int, world_size: int):
        import torch.distributed as dist

        self.rank, self.world_size, self.dist = rank, world_size, dist
        if world_size > 1 and not dist.is_initialized():
            from datetime import timedelta

            dist.init_process_group(backend="gloo", timeout=timedelta(hours=6))

    def gather(
        self, mine: list[tuple[np.ndarray, np.ndarray]], failure: Exception | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every process's batches, in rank order. A process that failed (``failure``) still takes part, with its
        error's message, so every process stops at this gather instead of the others waiting here for hours:
        the failing one re-raises its own error, the others raise :class:`PeerProcessError` naming it."""
        if self.world_size <= 1:
            if failure is not None:
                raise failure
            return mine
        message = None if failure is None else f"{type(failure).__name__}: {failure}"
        everyone: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(everyone, (message, mine))
        if failure is not None:
            raise failure
        for rank, (peer_message, _) in enumerate(everyone):
            if peer_message is not None:
                raise PeerProcessError(
                    f"process {rank} of {self.world_size} failed while encoding ({peer_message}); process "
                    f"{self.rank} stops too. Fix what that message says and rerun."
                )
        return [pair for _, share in everyone for pair in share]


def encode_texts(
    encoder: Teacher,
    texts: Sequence[str],
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    progress: bool = False,
    desc: str = "encoding",
    sink=None,
    rank: int | None = None,
    world_size: int | None = None,
) -> np.ndarray | None:
    """L2-normalised embeddings of ``texts`` (model input texts: apply ``query_text`` / ``passage_text`` first),
    in length-sorted token-budget batches (:func:`hf_distill.teachers.runner.plan_batches`), ``ENCODE_CHUNK``
    texts per round so token ids never exist for the whole corpus at once.

    Under ``accelerate launch`` / ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment, or given), each
    process encodes every ``world_size``-th batch of a chunk and all processes receive the whole chunk: the same
    batches, shapes and vectors as one process, in ``1 / world_size`` of the time. Every process must call it.

    Returns ``[len(texts), dim]`` float32; with ``sink(indices, embeddings)`` each batch is handed to it instead
    (e.g. straight into a faiss index) and ``None`` is returned, so the vectors are held once.
    """
    if encoder.unit != "text":
        raise ConfigError(
            f"dense retrieval needs an embedding model; {encoder.model_name_or_path} is a {encoder.kind}. "
            "Fix: pass an embedding model (a sentence-transformers checkpoint), or use --retriever bm25."
        )
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    gatherer = _ShareGatherer(rank, world_size)
    out = None if sink is not None else np.empty((len(texts), encoder.output_dim), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = texts[start : start + ENCODE_CHUNK]
            plan = plan_batches(item_lengths(encoder, chunk), max_tokens_per_batch)
            encoded, failure = [], None
            try:
                for batch, prepared in prepared_batches(encoder, chunk, plan[rank::world_size]):
                    embeddings = encoder.run_batch(prepared)
                    if not np.isfinite(embeddings).all():
                        row = int(np.argmin(np.isfinite(embeddings).all(axis=1)))
                        raise NonFiniteScoreError(
                            f"{encoder.model_name_or_path} gave a non-finite embedding for "
                            f"{chunk[int(batch[row])][:80]!r}. Fix: encode in float32 (float16 overflows), or "
                            "check the checkpoint."
                        )
                    encoded.append((batch + start, embeddings))
                    bar.update(len(batch) * world_size)
            except Exception as error:  # told to the other processes at the gather, then raised here
                failure = error
            for indices, embeddings in gatherer.gather(encoded, failure):
                if sink is not None:
                    sink(indices, embeddings)
                else:
                    out[indices] = embeddings
    return out


def build_faiss_index(dim: int, num_vectors: int, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD):
    """An inner-product faiss index with caller-given ids: exact (``IndexFlatIP``) up to ``hnsw_threshold``
    vectors, HNSW beyond (``M = 32``, ``efConstruction = 80``, ``efSearch = 128``; approximate)."""
    faiss = _import_optional("faiss", "faiss-cpu")
    if num_vectors > hnsw_threshold:
        inner = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap(inner)


class DenseRetriever:
    """Cosine nearest neighbours of the query embedding among the passage embeddings of an embedding scorer
    (:class:`hf_distill.teachers.EmbeddingTeacher`, e.g. from :func:`hf_distill.evaluation.load_scorer`), with the
    scorer's own query and passage prompts; faiss index from :func:`build_faiss_index`."""

    name = "dense"

    def __init__(
        self,
        encoder: Teacher,
        texts: Sequence[str],
        max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        progress: bool = False,
    ):
        self.encoder = encoder
        self.max_tokens_per_batch = max_tokens_per_batch
        self.num_passages = len(texts)
        passages = [encoder.passage_text(text) for text in texts] if encoder.unit == "text" else texts
        index = None

        def add(ids: np.ndarray, embeddings: np.ndarray) -> None:
            nonlocal index
            if index is None:
                index = build_faiss_index(embeddings.shape[1], len(texts), hnsw_threshold)
            index.add_with_ids(np.ascontiguousarray(embeddings), ids.astype(np.int64))

        encode_texts(encoder, passages, max_tokens_per_batch, progress, "encoding the corpus", sink=add)
        self.index = index

    def search(self, queries: Sequence[str], k: int) -> RetrievalResults:
        """The ``k`` passages of highest cosine per query."""
        embeddings = encode_texts(
            self.encoder, [self.encoder.query_text(q) for q in queries], self.max_tokens_per_batch, desc="queries"
        )
        scores, indices = self.index.search(embeddings, min(k, self.num_passages))
        padded_indices = np.full((len(queries), k), -1, dtype=np.int64)
        padded_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        padded_indices[:, : indices.shape[1]] = indices
        padded_scores[:, : indices.shape[1]] = scores
        return RetrievalResults(padded_indices, padded_scores)


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], k: int, rrf_k: int = RRF_K) -> RetrievalResults:
    """Fuse ranked lists ``rankings[r] [Q, K_r]`` (corpus indices, ``-1`` = none) into the ``k`` best per query::

        RRF(d) = sum_r 1 / (rrf_k + rank_r(d)),   rank_r(d) = 1 for the first result of list r

    a passage missing from a list gets nothing from it (Cormack, Clarke & Büttcher, *Reciprocal Rank Fusion
    outperforms Condorcet and individual Rank Learning Methods*, SIGIR 2009, ``rrf_k = 60``). Ties are broken by
    the smaller corpus index, so the fusion is deterministic.
    """
    if not rankings:
        raise ConfigError("reciprocal_rank_fusion needs at least one ranking.")
    num_queries = len(rankings[0])
    indices = np.full((num_queries, k), -1, dtype=np.int64)
    scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    for q in range(num_queries):
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, passage in enumerate(ranking[q], start=1):
                if passage >= 0:
                    fused[int(passage)] = fused.get(int(passage), 0.0) + 1.0 / (rrf_k + rank)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        for position, (passage, value) in enumerate(best):
            indices[q, position], scores[q, position] = passage, value
    return RetrievalResults(indices, scores)


class HybridRetriever:
    """:func:`reciprocal_rank_fusion` of several first stages, each searched ``depth`` deep."""

    name = "hybrid"

    def __init__(self, retrievers: Sequence[Any], depth: int = 100, rrf_k: int = RRF_K):
        self.retrievers = list(retrievers)
        self.depth = depth
        self.rrf_k = rrf_k

    def search(self, queries: Sequence[str], k: int) -> RetrievalResults:
        depth = max(self.depth, k)
        rankings = [retriever.search(queries, depth).indices for retriever in self.retrievers]
        return reciprocal_rank_fusion(rankings, k, self.rrf_k)


def build_retriever(
    retriever: str,
    corpus: Corpus,
    encoder: Teacher | None = None,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
    depth: int = 100,
    progress: bool = False,
):
    """``bm25``, ``dense`` (needs ``encoder``) or ``hybrid`` (both, fused by RRF) over ``corpus``."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"--retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}.")
    if retriever in ("dense", "hybrid") and encoder is None:
        raise ConfigError(
            f"--retriever {retriever} needs an embedding model. Fix: pass --retriever_model_name_or_path."
        )
    stages = []
    if retriever in ("bm25", "hybrid"):
        stages.append(BM25Retriever(corpus.texts, progress=progress))
    if retriever in ("dense", "hybrid"):
        stages.append(DenseRetriever(encoder, corpus.texts, max_tokens_per_batch, hnsw_threshold, progress))
    return stages[0] if len(stages) == 1 else HybridRetriever(stages, depth)


def rerank(
    scorer: Teacher,
    queries: Sequence[str],
    corpus: Corpus,
    first_stage: RetrievalResults,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    progress: bool = False,
) -> RetrievalResults:
    """Reorder each query's first-stage passages by ``scorer`` (a reranker or embedder): the two-stage way MTEB
    evaluates a reranker. Passages the first stage did not return stay out."""
    kept = [[int(i) for i in row if i >= 0] for row in first_stage.indices]
    todo = [q for q, row in enumerate(kept) if row]
    groups = [RankingGroup(queries[q], [corpus.texts[i] for i in kept[q]]) for q in todo]
    scored = score_groups(scorer, groups, max_tokens_per_batch=max_tokens_per_batch, progress=progress)
    width = first_stage.indices.shape[1]
    indices = np.full((len(queries), width), -1, dtype=np.int64)
    scores = np.full((len(queries), width), -np.inf, dtype=np.float32)
    for q, values in zip(todo, scored):
        order = np.argsort(-np.asarray(values), kind="stable")
        indices[q, : len(order)] = np.asarray(kept[q])[order]
        scores[q, : len(order)] = np.asarray(values, dtype=np.float32)[order]
    return RetrievalResults(indices, scores)


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def relevance_matrix(ranked: np.ndarray, relevant: Sequence[Sequence[int]]) -> np.ndarray:
    """``rel[q, i] = 1`` iff the ``i``-th result of query ``q`` is one of its relevant passages (``-1`` never)."""
    ranked = np.asarray(ranked, dtype=np.int64)
    rel = np.zeros(ranked.shape, dtype=np.float64)
    for q, positives in enumerate(relevant):
        if len(positives):
            rel[q] = np.isin(ranked[q], np.fromiter(positives, dtype=np.int64)) & (ranked[q] >= 0)
    return rel


def per_query_retrieval_metrics(ranked: Any, relevant: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per query: nDCG@10, MRR@10, Recall@100 and MAP@100 of a ranked list (``trec_eval`` definitions, binary
    relevance). With ``rel_i`` 1 when the result at rank ``i`` is relevant and ``R`` the query's number of
    relevant passages::

        nDCG@10    = sum_{i<=10} rel_i / log2(i + 1)  /  sum_{i<=min(R,10)} 1 / log2(i + 1)
        MRR@10     = 1 / (rank of the first relevant result), 0 if it is not in the top 10
        Recall@100 = sum_{i<=100} rel_i / R
        MAP@100    = sum_{i<=100} rel_i * P@i / R,     P@i = sum_{j<=i} rel_j / i

    (Järvelin & Kekäläinen, TOIS 2002 for nDCG; ``trec_eval``'s ``ndcg_cut``, ``recip_rank``, ``recall`` and
    ``map_cut``: MAP divides by all ``R`` relevant passages, also those not retrieved.) Queries with ``R = 0``
    are left out (``trec_eval`` skips them too); ``ranked`` is ``[Q, K]`` corpus indices, best first, ``-1``
    padding, each passage at most once per row.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(relevant):
        raise ConfigError(
            f"ranked must be [queries, k] with one row per query, got {ranked.shape} for {len(relevant)}."
        )
    counts = np.array([len(set(positives)) for positives in relevant], dtype=np.float64)
    judged = counts > 0
    rel = relevance_matrix(ranked, relevant)[judged]
    counts = counts[judged]
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    top10 = rel[:, :10]
    ideal = np.cumsum(1.0 / np.log2(np.arange(1, 11) + 1.0))[np.minimum(counts, 10).astype(int) - 1]
    ndcg = (top10 * discounts[: top10.shape[1]]).sum(axis=1) / ideal
    has_hit = top10.any(axis=1)
    mrr = np.where(has_hit, 1.0 / (np.argmax(top10, axis=1) + 1.0), 0.0) if top10.size else np.zeros(len(counts))
    top100 = rel[:, :100]
    recall = top100.sum(axis=1) / counts
    precision = np.cumsum(top100, axis=1) / ranks[: top100.shape[1]]
    average_precision = (precision * top100).sum(axis=1) / counts
    return {"ndcg@10": ndcg, "mrr@10": mrr, "recall@100": recall, "map@100": average_precision}


def retrieval_metrics(ranked: Any, relevant: Sequence[Sequence[int]]) -> dict[str, float]:
    """The mean of :func:`per_query_retrieval_metrics` over queries with a known relevant passage, and
    ``num_queries``, their number (metrics are NaN when it is 0)."""
    per_query = per_query_retrieval_metrics(ranked, relevant)
    num_queries = len(per_query["ndcg@10"])
    metrics = {key: float(values.mean()) if num_queries else float("nan") for key, values in per_query.items()}
    metrics["num_queries"] = num_queries
    return metrics


def relevant_indices(queries: Sequence[Query], corpus: Corpus) -> list[list[int]]:
    """Each query's positive ids as corpus indices."""
    return [[corpus.position[passage_id] for passage_id in query.positive_ids] for query in queries]


def evaluate_retrieval(
    retriever: Any,
    corpus: Corpus,
    queries: Sequence[Query],
    depth: int = 100,
    reranker: Teacher | None = None,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
) -> dict[str, float]:
    """:func:`retrieval_metrics` of ``retriever`` searching ``depth`` deep for ``queries`` over ``corpus``; with
    ``reranker``, of the reranker reordering that first stage."""
    if not any(query.positive_ids for query in queries):
        raise ConfigError(
            "no query has positive_ids, so retrieval cannot be measured. Fix: give queries their relevant passage "
            'ids ("positive_ids": [...]).'
        )
    texts = [query.text for query in queries]
    results = retriever.search(texts, depth)
    if reranker is not None:
        results = rerank(reranker, texts, corpus, results, max_tokens_per_batch)
    return retrieval_metrics(results.indices, relevant_indices(queries, corpus))


RETRIEVAL_TITLES = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100", "map@100": "MAP@100"}


def retrieval_markdown(results: dict[str, dict[str, Any]]) -> str:
    """One Markdown table per query set (:func:`evaluate_models_as_retrievers` results, with ``queries_file``):
    teacher, base and student rows (those measured), how each retrieved, then the student's change over the base."""
    lines = []
    for name, result in results.items():
        lines.append(
            f"## retrieval: {name} (`{result.get('queries_file', '')}`, {result.get('num_queries')} queries with "
            f"positives, {result['corpus_size']} passages)\n"
        )
        lines.append("| | " + " | ".join(RETRIEVAL_TITLES[key] for key in RETRIEVAL_KEYS) + " | first stage |")
        lines.append("|---|" + "---:|" * len(RETRIEVAL_KEYS) + "---|")
        for row in ("teacher", "base", "student"):
            if result.get(row):
                cells = " | ".join(f"{result[row][key]:.4f}" for key in RETRIEVAL_KEYS)
                lines.append(f"| {row} | {cells} | {result['retrievers'][row]} |")
        if result.get("change"):
            change = result["change"]
            cells = [f"{change[key]['absolute']:+.4f}" if key in change else "—" for key in RETRIEVAL_KEYS]
            lines.append("| change | " + " | ".join(cells) + " | |")
        lines.append("")
    return "\n".join(lines)


def first_stage_name(scorer: Teacher, depth: int, num_passages: int, hnsw_threshold: int) -> str:
    """How :func:`evaluate_models_as_retrievers` retrieves with ``scorer``, in words."""
    if scorer.unit == "text":
        return f"dense ({'HNSW' if num_passages > hnsw_threshold else 'exact'} inner product over the corpus)"
    return f"BM25 top {depth}, reranked"


def evaluate_models_as_retrievers(
    corpus: Corpus,
    query_sets: dict[str, Sequence[Query]],
    scorers: dict[str, Teacher | None],
    depth: int = 100,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every scorer as a retriever over the whole corpus, for every query set: an embedding model by dense
    retrieval (:class:`DenseRetriever`; the corpus is encoded once per model, whatever the number of query sets),
    a reranker on top of BM25's ``depth`` best (two-stage, as MTEB evaluates rerankers). ``scorers`` maps row
    names (``teacher``, ``base``, ``student``) to scorers (``None``: not measured).

    Returns:
        per query set, ``{row: metrics or None, "change": student over base (or None), "retrievers": {row: how},
        "num_queries", "corpus_size"}``; metrics are :func:`retrieval_metrics`.
    """
    results: dict[str, dict[str, Any]] = {
        name: {"corpus_size": len(corpus), "num_queries": None, "retrievers": {}} for name in query_sets
    }
    bm25_first_stages: dict[str, RetrievalResults] = {}
    for row, scorer in scorers.items():
        if scorer is None:
            for result in results.values():
                result[row] = None
            continue
        logger.info("retrieval: %s %s over %d passages", row, scorer.model_name_or_path, len(corpus))
        retriever = None
        if scorer.unit == "text":
            retriever = DenseRetriever(scorer, corpus.texts, max_tokens_per_batch, hnsw_threshold, progress)
        for name, queries in query_sets.items():
            result = results[name]
            if retriever is not None:
                result[row] = evaluate_retrieval(retriever, corpus, queries, depth)
            else:
                texts = [query.text for query in queries]
                if name not in bm25_first_stages:
                    if "bm25" not in bm25_first_stages:
                        bm25_first_stages["bm25"] = BM25Retriever(corpus.texts)
                    bm25_first_stages[name] = bm25_first_stages["bm25"].search(texts, depth)
                reranked = rerank(scorer, texts, corpus, bm25_first_stages[name], max_tokens_per_batch, progress)
                result[row] = retrieval_metrics(reranked.indices, relevant_indices(queries, corpus))
            result["retrievers"][row] = first_stage_name(scorer, depth, len(corpus), hnsw_threshold)
            result["num_queries"] = result[row]["num_queries"]
        del retriever  # one index at a time
    for result in results.values():
        base, student = result.get("base"), result.get("student")
        result["change"] = metric_change(base, student, RETRIEVAL_KEYS) if base and student else None
    return results
