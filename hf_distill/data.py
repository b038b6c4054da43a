"""Ranking data: row formats, validation, and the one in-memory form every trainer uses.

The in-memory form is a **listwise group**: one query, ``N`` candidate passages, ``N`` raw teacher scores
(kept as fp32 once in a ``datasets.Dataset``) and optionally ``N`` relevance labels: ``1`` relevant, ``0`` not
relevant, ``-1`` unknown (:class:`RankingGroup`). Every row format below is converted to it on read:

=================  ===========================================================  ==================================
format             row                                                          becomes
=================  ===========================================================  ==================================
``listwise``       ``{query, passages[], scores[], labels[]?}``                 one group, as is
``pointwise``      ``{query, passage, score, label?}``                          rows grouped by query, in first-seen
                                                                                order (queries and passages)
``pairwise``       ``{query, positive, negative, score}``                       group ``[positive, negative]``,
                                                                                scores ``[score, 0.0]``,
                                                                                labels ``[1, 0]``
``pairwise``       ``{query, positive, negative, positive_score,                group ``[positive, negative]``,
                   negative_score}``                                            scores ``[p, n]``, labels ``[1, 0]``
``mteb``           ``{query, positive[], negative[]}``                          ``positive + negative``, labels
                                                                                ``1…1 0…0``, **no scores**
``flagembedding``  ``{query, pos[], neg[], pos_scores[], neg_scores[]}``        ``pos + neg``, labels from pos/neg
=================  ===========================================================  ==================================

Decisions a user should know:

* **Pairwise margins.** A ``{…, score}`` pairwise row carries only the teacher margin
  ``t(q, p+) - t(q, p-)`` (as in Margin-MSE training sets, Hofstätter et al. 2020). It is stored as scores
  ``[score, 0.0]``: every difference of scores (what Margin-MSE, RankNet and softmax/KL losses see) is
  preserved, the absolute level is not, so do not use such groups with a pointwise MSE loss. Each pairwise
  row stays its own group of two, even when queries repeat, because margins measured against different
  negatives cannot be put on one scale.
* **Pairwise labels.** ``positive`` is labelled 1 and ``negative`` 0, since that is what the column names
  assert. If your "positive" is only the teacher's preferred passage, ignore the labels (the default
  ``hard_label_weight=0`` does).
* **MTEB rows have no scores.** They are the *input* of teacher scoring: with ``require_scores=True`` reading
  them fails and tells you to run ``recipes/score_teacher.py`` first.
* **Labels are 1, 0 or -1.** ``labels``/``label`` take ``1`` (relevant), ``0`` (not relevant) or ``-1``
  (unknown, e.g. a mined candidate nobody judged). ``losses.hard_label_cross_entropy`` leaves ``-1`` out of its
  softmax; the metrics count it as non-relevant (as they do ``0``), like sentence-transformers' evaluators.
  Graded labels are refused: binarise them first.
* **Duplicates are dropped, conflicts are errors.** The same passage text twice for one query (retrievers
  return duplicates; FlagEmbedding ``pos``/``neg`` lists sometimes overlap) is kept once: the first copy, with
  its score, and a known label wins over ``-1``. Reading a file logs one warning with the number dropped. A
  passage labelled ``1`` in one copy and ``0`` in another is an error: the collator scores a repeated pair once,
  so the metrics would see a relevant and a non-relevant candidate tied.
* **Passages must have text.** Empty or whitespace-only passages (like queries) are errors.
* **Scores are raw.** No normalisation or temperature is applied here; losses own those options. Scores must be
  finite and their square must fit in float32 (``|score| <= ~1.8e19``), since losses compute ``(s - t)**2``.
  That bound only rejects the hopeless: squared differences and their sums overflow well below it (margin-MSE
  on a score of 1.5e19 is already ``inf``), so reading a file with scores beyond ``|score| > 1e4`` (no real
  teacher gives those) logs one warning.
* **Hub datasets offline.** A Hub name is read with ``datasets.load_dataset``; if that fails (e.g. with
  ``HF_HUB_OFFLINE=1``, where ``datasets`` only reads its own Arrow cache), the dataset repo is looked up in the
  ``huggingface_hub`` cache (``hf download --repo-type dataset NAME`` puts it there) and its folder is loaded.
* **Scores are raw.** No normalisation or temperature is applied here; losses own those options.
* **Where errors point.** Every problem raises one :class:`DataFormatError` whose message reads
  ``"{file}:{line}: field '{field}': {problem}. Fix: {fix}"``. ``line`` is 1-based for JSONL and JSON files;
  for Parquet files, ``datasets`` directories and Hub datasets it is ``row N`` with ``N`` the 0-based index,
  i.e. the row you get with ``dataset[N]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .errors import DataFormatError

logger = logging.getLogger("hf_distill")

FORMATS = ("listwise", "pointwise", "pairwise", "mteb", "flagembedding")

# What each format's rows look like, quoted in error messages so a user sees every option at once.
FORMAT_FIELDS = {
    "listwise": "{query, passages[], scores[], labels[]?}",
    "pointwise": "{query, passage, score, label?}",
    "pairwise": "{query, positive, negative, score} or {query, positive, negative, positive_score, negative_score}",
    "mteb": "{query, positive[], negative[]}",
    "flagembedding": "{query, pos[], neg[], pos_scores[], neg_scores[]}",
}

_FLOAT32_MAX = 3.4028234663852886e38  # scores are stored as fp32; a larger finite float64 would become inf
# Losses compute (s - t)**2 in fp32: a score whose square is above the float32 range turns the loss into inf.
_MAX_ABS_SCORE = math.sqrt(_FLOAT32_MAX)  # ~1.84e19
# Far beyond any real teacher (logits ~ +-20, cosines in [-1, 1]): such scores are usually a bug upstream.
_LARGE_SCORE = 1e4
UNKNOWN_LABEL = -1
_SCORE_TEACHER_FIX = (
    "run recipes/score_teacher.py on this file first to add teacher scores, "
    "or pass require_scores=False to read labels only"
)


@dataclass
class RankingGroup:
    """One query with its candidate passages: the unit every loss and metric works on.

    Attributes:
        query: the query text (non-empty).
        passages: the ``N >= 1`` non-empty candidates, in the order the source gave them. :func:`read_groups`
            keeps one copy of a repeated passage; a group built in code may repeat one (it is scored once by the
            collators) but not with labels 1 and 0.
        scores: ``N`` raw teacher scores (e.g. ``logit(yes) - logit(no)`` for Qwen3-Reranker), or ``None``
            when the group has not been scored yet.
        labels: ``N`` relevance labels (1 relevant, 0 not relevant, -1 unknown), or ``None`` when all are
            unknown.
    """

    query: str
    passages: list[str]
    scores: list[float] | None = None
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.passages)


# ---------------------------------------------------------------------------------------------------------
# Row checks: every check knows the file, the place and the field, so its error can name all three.
# ---------------------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Row:
    """One raw row plus where it came from."""

    def __init__(self, source: str, place: str, row: dict, fmt: str) -> None:
        self.source, self.place, self.row, self.fmt = source, place, row, fmt

    def error(self, field: str | None, problem: str, fix: str) -> DataFormatError:
        return DataFormatError(self.source, self.place, field, problem, fix)

    def has(self, field: str) -> bool:
        # Parquet and datasets fill a column that a row lacks with None, so None means "absent".
        return self.row.get(field) is not None

    def require(self, field: str, what: str) -> Any:
        if not self.has(field):
            other = _detect_quietly(self.row)
            if other is not None and other != self.fmt:
                raise self.error(
                    field,
                    f"is missing; this row looks like {other} rows {FORMAT_FIELDS[other]} but the file is read as "
                    f"{self.fmt} (from its first row or format=)",
                    f"keep one format per file; {self.fmt} rows are {FORMAT_FIELDS[self.fmt]}",
                )
            raise self.error(field, f"is missing ({self.fmt} rows are {FORMAT_FIELDS[self.fmt]})", f"add {what}")
        return self.row[field]

    def query(self) -> str:
        value = self.require("query", "the query text")
        if not isinstance(value, str):
            raise self.error("query", f"expected a string, got {_type_name(value)}", "write the query as a JSON string")
        if not value.strip():
            raise self.error("query", "is an empty string", "drop this row or fill in the query text")
        return value

    def text(self, field: str) -> str:
        value = self.require(field, "the passage text")
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {_type_name(value)}", "write the passage as a JSON string")
        self._check_not_blank(field, value)
        return value

    def _check_not_blank(self, field: str, value: str) -> None:
        # An empty passage still gets a teacher score and a place in the softmax, but carries no text to learn from.
        if not value.strip():
            problem = "is an empty string" if not value else "is empty (whitespace only)"
            fix = "drop this candidate (with its score and label) or fill in the passage text"
            raise self.error(field, problem, fix)

    def texts(self, field: str, accept_single: bool = False) -> list[str]:
        value = self.require(field, "the list of passage texts")
        if accept_single and isinstance(value, str):
            self._check_not_blank(field, value)
            return [value]
        if not isinstance(value, (list, tuple)):
            raise self.error(
                field,
                f"expected a list of strings, got {_type_name(value)}",
                "write the passages as a JSON list of strings",
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(
                    field,
                    f"item {i} is {_type_name(item)} {item!r}, not a string",
                    "write every passage as a JSON string",
                )
            self._check_not_blank(f"{field}[{i}]", item)
        return list(value)

    def _score(self, field: str, value: Any, index: int | None) -> float:
        at = "" if index is None else f"item {index} "
        # bool is an int subclass in Python; true/false in a score column is a bug upstream, not a score.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.error(
                field, f"{at}is {_type_name(value)} {value!r}, not a number", "write teacher scores as JSON numbers"
            )
        score = float(value)
        # Python's json reads NaN/Infinity literals (and 1e400 as inf), so non-finite scores do reach us.
        if not math.isfinite(score):
            raise self.error(
                field,
                f"{at}is {score}; teacher scores must be finite",
                "re-score this query (an fp16 teacher can overflow; score in bf16/fp32) or drop the row",
            )
        if abs(score) > _MAX_ABS_SCORE:
            raise self.error(
                field,
                f"{at}is {score}; its square overflows float32 (|score| > {_MAX_ABS_SCORE:.3g}), so squared-error "
                f"losses such as (s - t)**2 become inf",
                "rescale or re-score (raw reranker logits are about +-20, cosines within [-1, 1])",
            )
        return score

    def score(self, field: str) -> float:
        what = f"the teacher score (a number); for unscored data {_SCORE_TEACHER_FIX}"
        return self._score(field, self.require(field, what), None)

    def scores(self, field: str, length: int, length_field: str) -> list[float]:
        value = self.require(
            field, f"one teacher score per item of '{length_field}'; for unscored data {_SCORE_TEACHER_FIX}"
        )
        if not isinstance(value, (list, tuple)):
            raise self.error(
                field,
                f"expected a list of numbers, got {_type_name(value)}",
                "write the scores as a JSON list of numbers",
            )
        scores = [self._score(field, item, i) for i, item in enumerate(value)]
        if len(scores) != length:
            raise self.error(
                field,
                f"has {len(scores)} values but '{length_field}' has {length}",
                f"write exactly one score per item of '{length_field}', in the same order",
            )
        return scores

    def _label(self, field: str, value: Any, index: int | None) -> int:
        at = "" if index is None else f"item {index} "
        # Accept 1/0/-1 however it is spelled (int, bool, 1.0); anything else is a graded label we cannot use.
        if isinstance(value, numbers.Real) and value in (1, 0, UNKNOWN_LABEL):
            return int(value)
        raise self.error(
            field,
            f"{at}is {_type_name(value)} {value!r}; labels must be 1, 0 or -1 (unknown)",
            "write 1 for relevant, 0 for not relevant and -1 for unknown (binarise graded labels first), "
            "or leave labels out",
        )

    def label(self, field: str) -> int:
        return self._label(field, self.row[field], None)

    def labels(self, field: str, length: int, length_field: str) -> list[int]:
        value = self.row[field]
        if not isinstance(value, (list, tuple)):
            raise self.error(
                field, f"expected a list of 1/0/-1, got {_type_name(value)}", "write labels as a JSON list of 1/0/-1"
            )
        labels = [self._label(field, item, i) for i, item in enumerate(value)]
        if len(labels) != length:
            raise self.error(
                field,
                f"has {len(labels)} values but '{length_field}' has {length}",
                f"write exactly one label per item of '{length_field}', or leave labels out",
            )
        return labels

    def non_empty(self, field: str, passages: list[str]) -> list[str]:
        if not passages:
            raise self.error(field, "has no candidates", "drop this row, or add at least one passage")
        return passages


# ---------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------


def _detect_quietly(row: dict) -> str | None:
    keys = set(row)
    if "passages" in keys:
        return "listwise"
    if "passage" in keys:
        return "pointwise"
    if "pos" in keys or "neg" in keys:
        return "flagembedding"
    if "positive" in keys and "negative" in keys:
        # Same column names, told apart by type: MTEB holds lists of passages, pairwise rows one passage each.
        return "mteb" if isinstance(row["positive"], (list, tuple)) else "pairwise"
    return None


def detect_format(row: dict, source: str = "<row>", place: str | None = None) -> str:
    """Name the format of ``row`` from its keys (see the module docstring's table).

    ``passages`` means listwise, ``passage`` pointwise, ``pos``/``neg`` FlagEmbedding, and
    ``positive``/``negative`` MTEB when ``positive`` is a list, pairwise when it is a single passage.
    ``source`` and ``place`` only go into the error message.

    Raises:
        DataFormatError: when no format fits, listing what each format looks like.
    """
    if not isinstance(row, dict):
        raise DataFormatError(
            source, place, None, f"expected a row object, got {_type_name(row)}", "write one JSON object per row"
        )
    fmt = _detect_quietly(row)
    if fmt is None:
        accepted = "; ".join(f"{name} {fields}" for name, fields in FORMAT_FIELDS.items())
        raise DataFormatError(
            source,
            place,
            None,
            f"cannot tell the format from the keys {sorted(row)}",
            f"use one of: {accepted}; or pass format=",
        )
    return fmt


def _item_names(field: str, count: int) -> list[str]:
    return [f"{field}[{i}]" for i in range(count)]


def _read_listwise(r: _Row, require_scores: bool) -> tuple[RankingGroup, list[str]]:
    query = r.query()
    passages = r.non_empty("passages", r.texts("passages"))
    scores = None
    if require_scores and not r.has("scores"):
        raise r.error("scores", "is missing: these rows have no teacher scores", _SCORE_TEACHER_FIX)
    if r.has("scores"):
        scores = r.scores("scores", len(passages), "passages")
    labels = r.labels("labels", len(passages), "passages") if r.has("labels") else None
    return RankingGroup(query, passages, scores, labels), _item_names("passages", len(passages))


def _read_pairwise(r: _Row, require_scores: bool) -> tuple[RankingGroup, list[str]]:
    query = r.query()
    passages = [r.text("positive"), r.text("negative")]
    if r.has("positive_score") or r.has("negative_score"):
        # Both absolute scores carry more than the margin, so they win over a 'score' column if both exist.
        scores = [r.score("positive_score"), r.score("negative_score")]
    elif r.has("score") or require_scores:
        # Only the margin is known: any pair of scores with that difference will do; see the module docstring.
        scores = [r.score("score"), 0.0]
    else:
        scores = None
    return RankingGroup(query, passages, scores, [1, 0]), ["positive", "negative"]


def _list_or_single_names(r: _Row, field: str, count: int) -> list[str]:
    return [field] if isinstance(r.row[field], str) else _item_names(field, count)


def _read_mteb(r: _Row, require_scores: bool) -> tuple[RankingGroup, list[str]]:
    query = r.query()
    positive = r.texts("positive", accept_single=True)
    negative = r.texts("negative", accept_single=True)
    passages = r.non_empty("positive", positive + negative)
    names = _list_or_single_names(r, "positive", len(positive)) + _list_or_single_names(r, "negative", len(negative))
    return RankingGroup(query, passages, None, [1] * len(positive) + [0] * len(negative)), names


def _read_flagembedding(r: _Row, require_scores: bool) -> tuple[RankingGroup, list[str]]:
    query = r.query()
    pos, neg = r.texts("pos"), r.texts("neg")
    passages = r.non_empty("pos", pos + neg)
    scores = None
    if require_scores or r.has("pos_scores") or r.has("neg_scores"):
        scores = r.scores("pos_scores", len(pos), "pos") + r.scores("neg_scores", len(neg), "neg")
    names = _item_names("pos", len(pos)) + _item_names("neg", len(neg))
    return RankingGroup(query, passages, scores, [1] * len(pos) + [0] * len(neg)), names


_ROW_READERS = {
    "listwise": _read_listwise,
    "pairwise": _read_pairwise,
    "mteb": _read_mteb,
    "flagembedding": _read_flagembedding,
}

_CONFLICT_FIX = (
    "a passage cannot be both relevant and not relevant for one query: remove the wrong copy "
    "(e.g. FlagEmbedding pos and neg lists must not overlap) or mark it -1 (unknown)"
)


def _conflict_error(r: _Row, field: str, here: int, there: int, first: str) -> DataFormatError:
    return r.error(field, f"is the same passage as {first} but labelled {here} here and {there} there", _CONFLICT_FIX)


@dataclass
class _Duplicates:
    """Per-file count of repeated passages dropped from their group, for one warning at the end of the file."""

    dropped: int = 0
    other_score: int = 0  # of those, how many had a different teacher score than the copy that was kept

    def count(self, kept_score: float | None, dropped_score: float | None) -> None:
        self.dropped += 1
        self.other_score += kept_score != dropped_score


def _drop_duplicates(r: _Row, group: RankingGroup, names: list[str], duplicates: _Duplicates | None) -> RankingGroup:
    """Keep the first copy of each passage text in ``group`` (its score; a known label over -1).

    A copy labelled 1 where another is labelled 0 is an error: the collator scores both copies once, so MAP would
    see a relevant and a non-relevant candidate tied. With ``duplicates=None`` (groups built in code) nothing is
    dropped; only conflicts are checked.
    """
    first: dict[str, int] = {}
    labels = None if group.labels is None else list(group.labels)
    keep: list[int] = []
    for j, passage in enumerate(group.passages):
        i = first.setdefault(passage, j)
        if i == j:
            keep.append(j)
            continue
        if labels is not None:
            if {labels[i], labels[j]} == {0, 1}:
                raise _conflict_error(r, names[j], labels[j], labels[i], names[i])
            if labels[i] == UNKNOWN_LABEL:
                labels[i] = labels[j]
        if duplicates is not None and group.scores is not None:
            duplicates.count(group.scores[i], group.scores[j])
        elif duplicates is not None:
            duplicates.count(None, None)
    if duplicates is None or len(keep) == len(group.passages):
        return group
    return RankingGroup(
        group.query,
        [group.passages[i] for i in keep],
        None if group.scores is None else [group.scores[i] for i in keep],
        None if labels is None else [labels[i] for i in keep],
    )


class _PointwiseGrouper:
    """Collects pointwise rows into groups by query, in first-seen order of queries and passages.

    A passage seen again for the same query is dropped (counted in ``duplicates``), keeping the first row's score.
    """

    def __init__(self) -> None:
        self.groups: dict[str, RankingGroup] = {}
        self.first_place: dict[str, str] = {}
        self.passage_index: dict[str, dict[str, tuple[int, str]]] = {}  # query -> passage -> (index, place)
        self.duplicates = _Duplicates()

    def add(self, r: _Row, require_scores: bool) -> None:
        query = r.query()
        passage = r.text("passage")
        score = r.score("score") if (require_scores or r.has("score")) else None
        label = r.label("label") if r.has("label") else None
        group = self.groups.get(query)
        if group is None:
            self.groups[query] = RankingGroup(
                query, [passage], None if score is None else [score], None if label is None else [label]
            )
            self.first_place[query] = r.place
            self.passage_index[query] = {passage: (0, r.place)}
            return
        # A group is either scored (labelled) throughout or not at all; a half-scored group has no meaning.
        for field, value, values in (("score", score, group.scores), ("label", label, group.labels)):
            if (value is None) != (values is None):
                state = "missing here but given" if value is None else "given here but missing"
                first = _place_name(self.first_place[query])
                raise r.error(
                    field,
                    f"{state} on {first} for the same query",
                    f"give '{field}' on every row of a query or on none",
                )
        seen = self.passage_index[query].get(passage)
        if seen is not None:
            index, place = seen
            if label is not None:
                if {label, group.labels[index]} == {0, 1}:
                    first = f"{_place_name(place)} for the same query"
                    raise _conflict_error(r, "passage", label, group.labels[index], first)
                if group.labels[index] == UNKNOWN_LABEL:
                    group.labels[index] = label
            self.duplicates.count(None if score is None else group.scores[index], score)
            return
        self.passage_index[query][passage] = (len(group.passages), r.place)
        group.passages.append(passage)
        if score is not None:
            group.scores.append(score)
        if label is not None:
            group.labels.append(label)


def _place_name(place: str) -> str:
    return f"line {place}" if place.isdigit() else place


# ---------------------------------------------------------------------------------------------------------
# Sources: each yields (place, row) so that errors can point at the line or row.
# ---------------------------------------------------------------------------------------------------------

_BAD_JSON_FIX = "repair or remove this line (one JSON object per line)"


def _decode_line(raw: bytes, source: str, line: int) -> str:
    try:
        # utf-8-sig on the first line drops a byte-order mark that Windows editors like to add.
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(
            source,
            str(line),
            None,
            f"bytes are not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line)",
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def _as_object(value: Any, source: str, place: str) -> dict:
    if not isinstance(value, dict):
        raise DataFormatError(
            source,
            place,
            None,
            f"expected a JSON object, got {_type_name(value)}",
            "write each row as a JSON object {...}",
        )
    return value


def _iter_json_lines(path: str, fix: str = _BAD_JSON_FIX) -> Iterator[tuple[str, dict]]:
    # Parsed line by line (not with datasets) so that every error can name its line.
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            text = _decode_line(raw, path, line_number)
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                problem = f"not valid JSON ({err.msg} at column {err.colno})"
                raise DataFormatError(path, str(line_number), None, problem, fix) from None
            yield str(line_number), _as_object(value, path, str(line_number))


_WHITESPACE = re.compile(r"\s*")


def _iter_json_array(path: str, text: str) -> Iterator[tuple[str, dict]]:
    # raw_decode one element at a time, so each row still knows the line it starts on.
    decoder = json.JSONDecoder()
    fix = "repair the JSON (a .json file holds one JSON array of row objects, or one object per line)"

    def bad(pos: int, problem: str) -> DataFormatError:
        return DataFormatError(path, str(text.count("\n", 0, pos) + 1), None, problem, fix)

    pos = _WHITESPACE.match(text, text.index("[") + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            problem = f"not valid JSON ({err.msg} at column {err.colno})"
            raise DataFormatError(path, str(err.lineno), None, problem, fix) from None
        place = str(text.count("\n", 0, pos) + 1)
        yield place, _as_object(value, path, place)
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WHITESPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            end = _WHITESPACE.match(text, pos + 1).end()
            if end != len(text):
                raise bad(end, "unexpected text after the closing ']'")
            return
        else:
            raise bad(pos, "expected ',' or ']' after an array element")


def _iter_json_file(path: str) -> Iterator[tuple[str, dict]]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from _iter_json_lines(
            path, "repair this line (a .json file holds one JSON array of row objects, or one object per line)"
        )
        return
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # Decode the offending line alone so the error names it, like JSON-lines files do.
        start, end = data.rfind(b"\n", 0, err.start) + 1, data.find(b"\n", err.start)
        _decode_line(data[start : end if end >= 0 else len(data)], path, data.count(b"\n", 0, err.start) + 1)
        raise AssertionError("unreachable: _decode_line raises on the same bytes") from err
    yield from _iter_json_array(path, text)


def _iter_parquet(path: str) -> Iterator[tuple[str, dict]]:
    # pyarrow directly (a datasets dependency): datasets.Dataset.from_parquet would copy the file into its cache.
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"row {index}", row
            index += 1


def _iter_dataset(dataset: datasets.Dataset) -> Iterator[tuple[str, dict]]:
    for index, row in enumerate(dataset):
        yield f"row {index}", row


def _load_local_dir(path: str, split: str) -> datasets.Dataset:
    if any(os.path.exists(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataFormatError(
                    path, None, "split", f"no split {split!r} in this dataset", f"pass split= one of {sorted(loaded)}"
                )
            return loaded[split]
        return loaded
    # A plain folder of data files: datasets' packaged builders know how to read it.
    return datasets.load_dataset(path, split=split)


_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# Names ending like a data file are paths the user meant, never Hub dataset names.
_LOCAL_LOOKING_SUFFIXES = _FILE_SUFFIXES + (".csv", ".tsv", ".txt", ".gz", ".arrow")


def iter_rows(source: str | os.PathLike, split: str = "train") -> Iterator[tuple[str, dict]]:
    """``(place, row)`` for every row of a data source, whatever it holds: a ``.jsonl`` / ``.json`` /
    ``.parquet`` file, a dataset directory, or a Hub dataset (from the ``huggingface_hub`` cache when offline).
    ``place`` names the row in errors (a JSONL line number, ``row N``); a row that is not an object, a line that
    is not JSON or not UTF-8 is a :class:`DataFormatError`. :func:`iter_groups` reads ranking rows from it, and
    :mod:`hf_distill.retrieval` corpus and query rows."""
    path = os.fspath(source)
    if os.path.isfile(path):
        suffix = Path(path).suffix.lower()
        if suffix == ".jsonl":
            return _iter_json_lines(path)
        if suffix == ".json":
            return _iter_json_file(path)
        if suffix == ".parquet":
            return _iter_parquet(path)
        raise DataFormatError(
            path,
            None,
            None,
            f"unsupported file type {suffix or '(no suffix)'!r}",
            f"convert it to one of {', '.join(_FILE_SUFFIXES)}",
        )
    if os.path.isdir(path):
        return _iter_dataset(_load_local_dir(path, split))
    looks_local = path.lower().endswith(_LOCAL_LOOKING_SUFFIXES) or path.startswith((".", "~")) or os.path.isabs(path)
    if looks_local:
        raise DataFormatError(
            path,
            None,
            None,
            "no such file or directory",
            "check the path (it is read relative to the current directory)",
        )
    try:
        dataset = datasets.load_dataset(path, split=split)
    # load_dataset raises many types (not found, offline, bad split, auth); each means the same thing here.
    except Exception as err:
        # Offline, datasets only reads its own Arrow cache, not a repo fetched with `hf download --repo-type
        # dataset` into the huggingface_hub cache; so look there before giving up.
        try:
            dataset = datasets.load_dataset(_hub_cache_snapshot(path), split=split)
        except Exception as cache_err:
            raise DataFormatError(
                path,
                None,
                None,
                f"not a local file or directory; loading it as a Hub dataset failed "
                f"(load_dataset: {_one_line(err)}), and so did reading it from the huggingface_hub cache "
                f"(snapshot_download(repo_type='dataset', local_files_only=True): {_one_line(cache_err)})",
                f"check the path, or the Hub dataset name and split; without network (HF_HUB_OFFLINE=1) fetch it "
                f"first with `hf download --repo-type dataset {path}`",
            ) from err
        logger.info("%s: load_dataset failed (%s); read it from the huggingface_hub cache", path, _one_line(err))
    return _iter_dataset(dataset)


def _hub_cache_snapshot(name: str) -> str:
    """The folder of the cached snapshot of Hub dataset ``name``; raises if it is not in the local cache."""
    import huggingface_hub

    return huggingface_hub.snapshot_download(name, repo_type="dataset", local_files_only=True)


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def read_groups(
    source: str | os.PathLike, format: str = "auto", split: str = "train", require_scores: bool = True
) -> list[RankingGroup]:
    """Read a ranking data source into listwise groups, validating every row.

    Args:
        source: a ``.jsonl``, ``.json`` (JSON array of rows, or JSON lines) or ``.parquet`` file; a directory
            written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk`` (or a folder of data files); or a
            Hub dataset name, loaded with ``datasets.load_dataset(source, split=split)`` or, when that fails
            (offline), from its snapshot in the ``huggingface_hub`` cache.
        format: one of :data:`FORMATS`, or ``"auto"`` to detect it from the first row's keys. Every row must
            then be in that format.
        split: the split to read from a ``DatasetDict`` directory or a Hub dataset; ignored for single files.
        require_scores: fail when rows have no teacher scores (training needs them). Pass ``False`` to read
            labels-only data, e.g. MTEB reranking rows before teacher scoring or an evaluation set.

    Returns:
        The groups, in file order (pointwise rows: in first-seen order of their queries). A passage repeated
        within a group is kept once (first copy and score); one warning on the ``hf_distill`` logger counts the
        copies dropped, and another the scores above ``|score| > 1e4``.

    Raises:
        DataFormatError: on the first problem, naming file, line (or row), field and the fix.
    """
    return list(iter_groups(source, format=format, split=split, require_scores=require_scores))


def iter_groups(
    source: str | os.PathLike,
    format: str = "auto",
    split: str = "train",
    require_scores: bool = True,
    warn: bool = True,
) -> Iterator[RankingGroup]:
    """:func:`read_groups`, one group at a time: memory stays flat whatever the file's size (pointwise rows are
    the exception: a query's rows may be anywhere in the file, so they are grouped in memory first).

    The per-file warnings (dropped duplicates, huge scores) are logged once the file has been read, unless
    ``warn`` is false (a second pass over a file already warned about).
    """
    source = os.fspath(source)
    if format != "auto" and format not in FORMATS:
        raise DataFormatError(
            source, None, "format", f"unknown format {format!r}", f"pass format= one of: auto, {', '.join(FORMATS)}"
        )
    fmt = None if format == "auto" else format
    pointwise = _PointwiseGrouper()
    duplicates = _Duplicates()
    large: list[float] = []
    for place, row in iter_rows(source, split):
        if fmt is None:
            fmt = detect_format(row, source, place)
        if fmt == "mteb" and require_scores:
            raise DataFormatError(
                source,
                place,
                "scores",
                "MTEB reranking rows {query, positive[], negative[]} have no teacher scores",
                _SCORE_TEACHER_FIX,
            )
        r = _Row(source, place, row, fmt)
        if fmt == "pointwise":
            pointwise.add(r, require_scores)
        else:
            group, names = _ROW_READERS[fmt](r, require_scores)
            group = _drop_duplicates(r, group, names, duplicates)
            large.extend(abs(s) for s in (group.scores or ()) if abs(s) > _LARGE_SCORE)
            yield group
    if fmt is None:
        raise DataFormatError(
            source, None, None, "has no rows", "check that the file was fully written (did the scoring job finish?)"
        )
    if fmt == "pointwise":
        groups, duplicates = list(pointwise.groups.values()), pointwise.duplicates
        large = [abs(s) for group in groups for s in (group.scores or ()) if abs(s) > _LARGE_SCORE]
        yield from groups
    if warn:
        _warn_about_file(source, large, duplicates)


class RankingSource:
    """A ranking data source that is read anew, one group at a time, each time it is iterated: for a job that
    passes over data too big to hold twice (teacher scoring reads it once to plan and once to write).

    Iterating gives what :func:`iter_groups` gives (the first ``limit`` groups when ``limit`` is set); the file's
    warnings are logged on the first pass only (and not when ``limit`` stops it early). ``num_groups`` and ``num_pairs`` count the last complete pass.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        format: str = "auto",
        split: str = "train",
        require_scores: bool = True,
        limit: int | None = None,
    ) -> None:
        self.source, self.format, self.split, self.require_scores, self.limit = (
            os.fspath(source),
            format,
            split,
            require_scores,
            limit,
        )
        self.passes = 0
        self.num_groups: int | None = None
        self.num_pairs: int | None = None

    def __iter__(self) -> Iterator[RankingGroup]:
        groups = iter_groups(self.source, self.format, self.split, self.require_scores, warn=self.passes == 0)
        count = pairs = 0
        for group in groups:
            if self.limit is not None and count >= self.limit:
                break
            count += 1
            pairs += len(group.passages)
            yield group
        self.passes += 1
        self.num_groups, self.num_pairs = count, pairs

    def __repr__(self) -> str:
        return f"RankingSource({self.source!r})"


def _warn_about_file(source: str, large: list[float], duplicates: _Duplicates) -> None:
    """One warning per file and kind: dropped duplicate passages, and scores too large to be a teacher's."""
    if duplicates.dropped:
        logger.warning(
            "%s: dropped %d duplicate passages (the same text twice for one query; kept the first copy and its "
            "score, %d dropped copies had a different score)",
            source,
            duplicates.dropped,
            duplicates.other_score,
        )
    if large:
        logger.warning(
            "%s: %d teacher scores have |score| > 1e4 (largest %.3g); squared-error losses compute (s - t)**2, "
            "which is dominated by such values and overflows above ~1.8e19. Check that these are raw teacher "
            "logits or cosines (typically within +-20), or rescale them",
            source,
            len(large),
            max(large),
        )


def _check_group(group: RankingGroup, index: int) -> None:
    """Validate a group built in code (not read from a file) before it is written or turned into a dataset."""
    r = _Row("<groups>", f"group {index}", vars(group), "listwise")
    r.query()
    r.non_empty("passages", r.texts("passages"))
    if group.scores is not None:
        r.scores("scores", len(group.passages), "passages")
    if group.labels is not None:
        r.labels("labels", len(group.passages), "passages")
    _drop_duplicates(r, group, _item_names("passages", len(group.passages)), None)  # conflicts only


def groups_to_dataset(groups: Iterable[RankingGroup]) -> datasets.Dataset:
    """Turn groups into a ``datasets.Dataset`` that collators and ``Trainer`` consume.

    Columns: ``query`` (str), ``passages`` (list[str]), ``scores`` (list[float32]; zeros when the group is
    unscored, so only use unscored groups where teacher scores are not read, e.g. evaluation with labels)
    and ``labels`` (list[int64]: 1 relevant, 0 not, ``-1`` unknown; ``-1`` everywhere when the group has none).
    """
    columns: dict[str, list] = {name: [] for name in DATASET_FEATURES}
    for index, group in enumerate(groups):
        _check_group(group, index)
        for name, value in _dataset_row(group).items():
            columns[name].append(value)
    return datasets.Dataset.from_dict(columns, features=DATASET_FEATURES)


def load_ranking_dataset(
    source: str | os.PathLike,
    format: str = "auto",
    split: str = "train",
    require_scores: bool = True,
    min_candidates: int = 1,
) -> datasets.Dataset:
    """Read, validate and filter ranking data into a ``datasets.Dataset`` (see :func:`groups_to_dataset`).

    Groups with fewer than ``min_candidates`` passages are dropped, with one warning on the ``hf_distill``
    logger giving their count (listwise losses need several candidates to compare; a group of one only
    teaches a pointwise loss anything).

    **Memory.** A local file is streamed into an Arrow file in the ``datasets`` cache (``HF_DATASETS_CACHE``) one
    group at a time, and the dataset is memory-mapped from it: a million queries cost disk, not RAM, and every
    process of a data-parallel run maps the same file (the first run builds it; the cache key includes the
    file's size and modification time and the reader's code, so an edited file or a new hf_distill reads it
    again). The per-file warnings (duplicates dropped, huge scores) are logged when the cache is built, not when it
    is reused. Hub datasets and dataset folders are read into memory.

    Raises:
        DataFormatError: on any invalid row (see :func:`read_groups`) or when no group has enough candidates.
    """
    source = os.fspath(source)
    if not os.path.isfile(source):
        groups = iter_groups(source, format=format, split=split, require_scores=require_scores)
        return groups_to_dataset(_kept_groups(source, groups, min_candidates))
    stat = os.stat(source)
    gen_kwargs = {
        "source": os.path.abspath(source),
        "format": format,
        "split": split,
        "require_scores": require_scores,
        "min_candidates": min_candidates,
        "file_version": (stat.st_size, stat.st_mtime_ns),  # only in the cache key
        "reader_version": _READER_VERSION,  # a new reader (validation, dedup) reads the file again
    }
    try:
        dataset = datasets.Dataset.from_generator(_dataset_rows, features=DATASET_FEATURES, gen_kwargs=gen_kwargs)
    except datasets.exceptions.DatasetGenerationError as error:  # the generator's own error, wrapped
        cause = error.__cause__ or error.__context__
        if isinstance(cause, DataFormatError):
            raise cause from None
        raise
    return dataset


# The reader's own code: part of the Arrow cache key, so an upgraded hf_distill never serves rows its
# predecessor parsed (datasets pickles _dataset_rows by reference, not by code).
_READER_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

DATASET_FEATURES = datasets.Features(
    {
        "query": datasets.Value("string"),
        "passages": datasets.Sequence(datasets.Value("string")),
        "scores": datasets.Sequence(datasets.Value("float32")),
        "labels": datasets.Sequence(datasets.Value("int64")),
    }
)


def _dataset_row(group: RankingGroup) -> dict[str, Any]:
    n = len(group.passages)
    return {
        "query": group.query,
        "passages": list(group.passages),
        "scores": [float(s) for s in group.scores] if group.scores is not None else [0.0] * n,
        "labels": [int(v) for v in group.labels] if group.labels is not None else [-1] * n,
    }


def _dataset_rows(
    source: str,
    format: str,
    split: str,
    require_scores: bool,
    min_candidates: int,
    file_version: Any,
    reader_version: str,
) -> Iterator[dict[str, Any]]:
    """Rows of :func:`load_ranking_dataset`'s Arrow file (a module-level function: ``datasets`` hashes it)."""
    groups = iter_groups(source, format=format, split=split, require_scores=require_scores)
    for group in _kept_groups(source, groups, min_candidates):
        yield _dataset_row(group)


def _kept_groups(source: str, groups: Iterable[RankingGroup], min_candidates: int) -> Iterator[RankingGroup]:
    """The groups with at least ``min_candidates`` passages; one warning with the count of the others at the end,
    an error when none is left."""
    total = dropped = 0
    for group in groups:
        total += 1
        if len(group.passages) < min_candidates:
            dropped += 1
            continue
        yield group
    if dropped == total:
        raise DataFormatError(
            source,
            None,
            "passages",
            f"all {total} groups have fewer than min_candidates={min_candidates} candidates",
            "lower min_candidates or add candidates to the groups",
        )
    if dropped:
        logger.warning(
            "%s: dropped %d of %d groups with fewer than min_candidates=%d candidates",
            source,
            dropped,
            total,
            min_candidates,
        )


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_FIX = "give each eval set its own name with name=path, e.g. in_domain=data/x/test_scored.jsonl"


def _split_named(entry: str) -> tuple[str | None, str]:
    """``"name=path"`` -> (name, path) when the left side has no ``/``; otherwise (None, entry)."""
    name, sep, path = entry.partition("=")
    if sep and "/" not in name and "\\" not in name:
        return name, path
    return None, entry


def _default_name(path: str) -> tuple[str, str]:
    """(stem, parent folder name) of a file path; (last component, parent) of a directory or Hub name."""
    parts = Path(path.rstrip("/\\") or path)
    stem = parts.name
    if not os.path.isdir(path):
        # Strip data-file suffixes (also 'x.jsonl.gz'); a Hub name or folder like 'org/name.v2' keeps its dots.
        while Path(stem).suffix.lower() in _LOCAL_LOOKING_SUFFIXES and Path(stem).stem:
            stem = Path(stem).stem
    return stem, parts.parent.name


def eval_set_names(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """A unique display name for each eval source, usable as a metric prefix (``eval_<name>_map``).

    Rules, per entry, in input order:

    * ``name=path`` (an ``=`` whose left side has no ``/``) names the set explicitly;
    * otherwise the name is the file stem (``data/x/test_scored.jsonl`` -> ``test_scored``), or the last path
      component of a directory or Hub dataset name (``mteb/scidocs-reranking`` -> ``scidocs-reranking``);
    * entries without an explicit name that share a stem are each named ``<parent folder>_<stem>``
      (``stackoverflowdupquestions_test_scored``, ``scidocs_test_scored``);
    * characters outside ``[A-Za-z0-9_.-]`` become ``_``.

    Args:
        paths: eval files, directories or Hub dataset names, each optionally as ``name=path``.

    Returns:
        ``{name: path}`` in input order, ``path`` without its ``name=`` part.

    Raises:
        DataFormatError: (a ``ValueError``) when an explicit name is empty, or two entries still end up with the
            same name; the message names both entries and the fix (``name=path``).

    Example::

        >>> eval_set_names(["data/so/test.jsonl", "data/scidocs/test.jsonl", "ood=mteb/x"])
        {'so_test': 'data/so/test.jsonl', 'scidocs_test': 'data/scidocs/test.jsonl', 'ood': 'mteb/x'}
    """
    entries = [os.fspath(entry) for entry in paths]
    explicit, sources = zip(*(_split_named(entry) for entry in entries)) if entries else ((), ())
    for entry, name in zip(entries, explicit):
        if name is not None and not name.strip():
            raise DataFormatError(entry, None, None, "the eval set name before '=' is empty", _NAME_FIX)
    defaults = [_default_name(source) for source in sources]
    stem_count: dict[str, int] = {}
    for name, (stem, _) in zip(explicit, defaults):
        if name is None:
            stem_count[stem] = stem_count.get(stem, 0) + 1
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for entry, name, source, (stem, parent) in zip(entries, explicit, sources, defaults):
        if name is None:
            name = f"{parent}_{stem}" if stem_count[stem] > 1 and parent else stem
        name = _UNSAFE_NAME_CHARS.sub("_", name.strip())
        if not name:
            raise DataFormatError(repr(entry), None, None, "gives no eval set name (empty path)", _NAME_FIX)
        if name in names:
            raise DataFormatError(
                entry,
                None,
                None,
                f"its eval set name {name!r} is also the name of eval set {owner[name]!r} "
                f"(names must be unique: they prefix the metrics)",
                _NAME_FIX,
            )
        names[name], owner[name] = source, entry
    return names


def write_listwise_jsonl(groups: Iterable[RankingGroup], path: str | os.PathLike) -> Path:
    """Write groups as listwise JSONL rows ``{query, passages, scores?, labels?}``, atomically.

    The rows go to a temporary file in the same directory that then replaces ``path`` (``os.replace``), so a
    reader never sees a half-written file, even if the writer is killed. Scores are written as JSON numbers
    with Python's shortest round-trip repr (reading gives back the same floats); text is written as UTF-8
    (``ensure_ascii=False``). ``scores``/``labels`` are left out of a row when they are ``None``.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for index, group in enumerate(groups):
                _check_group(group, index)
                row: dict[str, Any] = {"query": group.query, "passages": list(group.passages)}
                if group.scores is not None:
                    row["scores"] = [float(s) for s in group.scores]  # also turns numpy floats into JSON numbers
                if group.labels is not None:
                    row["labels"] = [int(v) for v in group.labels]
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def build_reference_triplets(
    groups: Iterable[RankingGroup], top_k: int = 8, num_negatives: int = 4
) -> list[dict[str, Any]]:
    """Expand groups into the (query, positive, negative) triplets of the reference practice.

    This reproduces the seed project's training set: sort each group by teacher score (descending; ties keep
    input order); the ``top_k`` best candidates are positives; the ``num_negatives`` candidates ranked just
    after them (ranks ``top_k + 1 … top_k + num_negatives``) are the hard negatives; every positive is paired
    with every negative, giving ``top_k × num_negatives`` triplets per query (8 × 4 = 32 by default). Each
    triplet carries the Margin-MSE target (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models
    with Cross-Architecture Knowledge Distillation")

        score = t(q, p+) - t(q, p-)

    plus both raw teacher scores. Groups shorter than ``top_k + 1`` use ``top_k = N - 1`` so that at least
    one negative remains (and fewer negatives when fewer are left); groups of one candidate are skipped.

    This exists to compare against the reference, and for users who want triplet files; the trainers do not
    need it: a listwise group already holds every pair, and the "margin_mse_triplets" loss computes the same
    objective from the group's score matrix with each pair run through the student once.

    Raises:
        ValueError: if ``top_k`` or ``num_negatives`` is below 1, or a group has no teacher scores.
    """
    if top_k < 1 or num_negatives < 1:
        raise ValueError(f"top_k and num_negatives must be >= 1, got top_k={top_k}, num_negatives={num_negatives}")
    triplets: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        if group.scores is None:
            raise DataFormatError(
                "<groups>", f"group {index}", "scores", "the group has no teacher scores", _SCORE_TEACHER_FIX
            )
        n = len(group.passages)
        if n < 2:
            continue
        ranked = sorted(range(n), key=lambda i: -group.scores[i])  # sorted() is stable: ties keep input order
        k = min(top_k, n - 1)
        positives, negatives = ranked[:k], ranked[k : k + num_negatives]
        for p in positives:
            for q in negatives:
                t_pos, t_neg = float(group.scores[p]), float(group.scores[q])
                triplets.append(
                    {
                        "query": group.query,
                        "positive": group.passages[p],
                        "negative": group.passages[q],
                        "score": t_pos - t_neg,
                        "positive_score": t_pos,
                        "negative_score": t_neg,
                    }
                )
    return triplets
