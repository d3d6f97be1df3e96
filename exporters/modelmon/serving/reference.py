"""Reference profiles: what the training data looked like, bin by bin.

A profile is made once at training time (``Reference.from_data`` or
``modelmon profile``), saved as YAML next to the model, and loaded by the monitor.
Malformed files are configuration errors: loading fails naming the file, the field
and what was expected.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml

from .bins import (
    CATEGORICAL_SPECIAL,
    INVALID,
    NUMERIC_SPECIAL,
    SPECIAL_BINS,
    CategoricalBins,
    NumericBins,
    TextBins,
    category_key,
    numeric_bin_labels,
    tokenize,
)
from .calibration import Calibration
from .calibration import fit as fit_calibration

SCHEMA_VERSION = 1
DEFAULT_BINS = 10
DEFAULT_TOP_K = 50
MAX_TOP_K = 500
DEFAULT_VOCABULARY = 2000
MAX_VOCABULARY = 20_000
KINDS = ("numeric", "categorical", "text")


class ReferenceFileError(ValueError):
    """A reference profile that cannot be used: names the source, field and problem."""


@dataclass(frozen=True)
class ColumnProfile:
    """Profile of one feature or prediction output."""

    kind: str
    shares: dict[str, float]
    count: int
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()
    unknown_token_share: float | None = None
    mean: float | None = None
    stddev: float | None = None
    min: float | None = None
    max: float | None = None

    @property
    def bin_labels(self) -> list[str]:
        if self.kind != "categorical":
            return numeric_bin_labels(self.edges) + list(NUMERIC_SPECIAL)
        return list(self.categories) + list(CATEGORICAL_SPECIAL)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "count": self.count}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        else:
            out.update(edges=list(self.edges), mean=self.mean, stddev=self.stddev, min=self.min, max=self.max)
        if self.kind == "text":
            out.update(unknown_token_share=self.unknown_token_share, vocabulary=list(self.vocabulary))
        out["shares"] = dict(self.shares)
        return out


@dataclass(frozen=True)
class Reference:
    """The training-data profile a monitor compares live traffic against."""

    model: str
    version: str
    trained_at: datetime
    rows: int
    features: dict[str, ColumnProfile]
    outputs: dict[str, ColumnProfile] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    calibration: Calibration | None = None  # of the class probabilities, on a hold-out set (calibration.py)

    @functools.cached_property
    def hash(self) -> str:
        """Short content hash, exported as the ``reference`` label of modelmon_model_info."""
        body = json.dumps(self._body(), sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def _body(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "version": self.version,
            "trained_at": self.trained_at.isoformat(),
            "rows": self.rows,
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "evaluation": dict(self.evaluation),
            # only when present, so that the hashes of references without one stay as they were
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._body(), "hash": self.hash}

    def save(self, path: str | Path) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        Path(path).write_text("# modelmon reference profile\n" + text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReferenceFileError(f"{path}: cannot read reference profile: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ReferenceFileError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> "Reference":
        return _Parser(source).reference(data)

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        model: str,
        version: str,
        prediction: str | Sequence[str] | None = None,
        categorical: Iterable[str] | None = None,
        text: Iterable[str] | None = None,
        trained_at: datetime | str | None = None,
        bins: int = DEFAULT_BINS,
        top_k: int = DEFAULT_TOP_K,
        exclude: Iterable[str] = (),
        evaluation: Mapping[str, float] | None = None,
        holdout: Any = None,
        target: str | None = None,
        probabilities: Sequence[str] | None = None,
        classes: Sequence[Any] | None = None,
        positive: Any = None,
    ) -> "Reference":
        """Profile a pandas DataFrame or a mapping of column name to array.

        ``prediction`` names the output column(s); every other column not in
        ``exclude`` is a feature. Columns of object, string or bool dtype, and those
        named in ``categorical``, are categorical; those in ``text`` free text (binned by
        token count, with a vocabulary); the rest numeric. ``evaluation`` is the
        model's held-out score, e.g. ``{"mae": 15000.0}`` or ``{"accuracy": 0.93}``,
        exported for the quality-drop alert.

        ``holdout`` (a labeled hold-out set, not the training data, with ``target`` and the
        ``probabilities`` columns) calibrates the class probabilities for the estimated
        quality: see ``calibrate``.
        """
        evaluation = _check_evaluation(dict(evaluation or {}), "evaluation")
        if holdout is not None and set(evaluation) & {"accuracy", "precision", "recall", "f1"}:
            raise ValueError("evaluation: with a hold-out set, its realized accuracy is the reference score; "
                             "give one or the other")
        if holdout is not None and (target is None or not probabilities):
            raise ValueError("holdout: give target= (the label column) and probabilities= (one column per class)")
        columns = {str(name): data[name] for name in data.keys()} if isinstance(data, Mapping) else {
            str(name): data[name] for name in data.columns
        }
        outputs = [prediction] if isinstance(prediction, str) else list(prediction or [])
        categorical = set(categorical or ())
        text = set(text or ())
        unknown = (set(outputs) | categorical | text | set(exclude)) - set(columns)
        if unknown:
            raise ValueError(f"columns not in the data: {sorted(unknown)}")
        if not 1 <= bins <= 100:
            raise ValueError(f"bins must be between 1 and 100, got {bins}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        lengths = {len(col) for col in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: {sorted(lengths)}")
        rows = lengths.pop() if lengths else 0
        if rows == 0:
            raise ValueError("cannot profile empty data")

        def profile(name: str) -> ColumnProfile:
            if name in text:
                return profile_text(columns[name], bins=bins)
            return profile_column(columns[name], categorical=name in categorical, bins=bins, top_k=top_k)

        skip = set(outputs) | set(exclude)
        ref = cls(
            model=model,
            version=str(version),
            trained_at=_parse_time(trained_at) if trained_at is not None else datetime.now(timezone.utc),
            rows=rows,
            features={name: profile(name) for name in columns if name not in skip},
            outputs={name: profile(name) for name in outputs},
            evaluation=evaluation,
        )
        if holdout is None:
            return ref
        return ref.calibrate(holdout, target=target, probabilities=probabilities, classes=classes, positive=positive)

    def calibrate(self, holdout: Any, *, target: str, probabilities: Sequence[str],
                  classes: Sequence[Any] | None = None, positive: Any = None) -> "Reference":
        """This reference with a calibration of the model's class probabilities on ``holdout``.

        ``holdout``: a labeled hold-out set (DataFrame or mapping of columns), with the
        label column ``target`` and the model's probabilities in the columns
        ``probabilities``, in the order of ``classes`` (default: the sorted distinct
        labels, scikit-learn's ``classes_``); ``positive`` names a binary model's positive
        class (default: the second class). The predicted class is the reference's first
        output column if the hold-out set has it, else the most probable class. The
        realized hold-out accuracy (and precision, recall, F1 of a binary model) become
        the reference scores. Raises ValueError on probabilities that are not, labels
        outside the classes, or fewer than 200 rows (10 per class).
        """
        calibration, realized = fit_calibration(
            holdout, target=target, probabilities=probabilities, classes=classes, positive=positive,
            prediction=next(iter(self.outputs), None))
        evaluation = {k: v for k, v in self.evaluation.items() if k not in realized}
        return dataclasses.replace(self, calibration=calibration, evaluation={**evaluation, **realized})


EVALUATION_METRICS = ("accuracy", "mae", "precision", "recall", "f1")


def _check_evaluation(evaluation: dict, where: str) -> dict[str, float]:
    for metric, score in evaluation.items():
        if metric not in EVALUATION_METRICS:
            raise ValueError(f"{where}.{metric}: expected one of {EVALUATION_METRICS}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise ValueError(f"{where}.{metric}: expected a finite non-negative number, got {score!r}")
    return {k: float(v) for k, v in evaluation.items()}


def _parse_time(value: datetime | str) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _column_array(column: Any, categorical: bool) -> np.ndarray:
    """A float64 array for a numeric column, an object array for a categorical one."""
    if hasattr(column, "to_numpy"):  # pandas Series, including nullable dtypes
        from pandas.api import types

        if not categorical and types.is_numeric_dtype(column.dtype) and not types.is_bool_dtype(column.dtype):
            return column.to_numpy(dtype=np.float64, na_value=np.nan)
        return column.to_numpy(dtype=object)
    values = np.asarray(column)
    if not categorical and values.dtype.kind in "fiu":
        return values.astype(np.float64)
    return values.astype(object)


def profile_column(column: Any, *, categorical: bool, bins: int, top_k: int) -> ColumnProfile:
    """Profile one column with the same binning code the monitor uses at serving."""
    values = _column_array(column, categorical)
    if values.dtype == object:
        return _profile_categorical(values, top_k)
    return _profile_numeric(values, bins)


def profile_text(column: Any, *, bins: int, vocabulary_size: int = DEFAULT_VOCABULARY) -> ColumnProfile:
    """Profile free text: token-count bins, and the most frequent tokens as vocabulary."""
    values = _column_array(column, categorical=True)
    token_lists = [tokenize(v) if isinstance(v, str) else None for v in values.tolist()]
    lengths = np.array([np.nan if t is None else len(t) for t in token_lists], dtype=np.float64)
    frequencies = Counter(w for t in token_lists if t for w in t)
    vocabulary = tuple(w for w, _ in frequencies.most_common(vocabulary_size))
    known = sum(frequencies[w] for w in vocabulary)
    total = sum(frequencies.values())
    numeric = _profile_numeric(lengths, bins)
    binner = TextBins(numeric.edges, vocabulary, [], [], 0, 0)
    counts, _ = binner.count_array(values)
    return dataclasses.replace(
        numeric,
        kind="text",
        shares=_shares(binner.labels, counts[: len(binner.labels)]),
        vocabulary=vocabulary,
        unknown_token_share=(total - known) / total if total else 0.0,
    )


def _profile_numeric(x: np.ndarray, bins: int) -> ColumnProfile:
    finite = x[np.isfinite(x)]
    if finite.size:
        edges = tuple(float(e) for e in np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))))
    else:
        edges = (0.0,)
    binner = NumericBins(edges, [], [], 0, 0)
    counts, _ = binner.count_array(x)
    stats = dict(mean=None, stddev=None, min=None, max=None)
    if finite.size:
        stats = dict(
            mean=float(finite.mean()),
            stddev=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            min=float(finite.min()),
            max=float(finite.max()),
        )
    return ColumnProfile(
        kind="numeric",
        edges=edges,
        shares=_shares(binner.labels, counts),
        count=int(finite.size),
        **stats,
    )


def _profile_categorical(values: np.ndarray, top_k: int) -> ColumnProfile:
    keys = Counter(category_key(v) for v in values.tolist())
    keys.pop(None, None)
    keys.pop(INVALID, None)
    categories = tuple(sorted((k for k, _ in keys.most_common(top_k)), key=lambda k: (-keys[k], k)))
    binner = CategoricalBins(categories, [], 0)
    counts, _ = binner.count_array(values)
    return ColumnProfile(
        kind="categorical",
        categories=categories,
        shares=_shares(binner.labels, counts),
        count=sum(keys.values()),
    )


def _shares(labels: list[str], counts: list[int]) -> dict[str, float]:
    total = sum(counts)
    return {label: n / total for label, n in zip(labels, counts)}


class _Parser:
    """Validates a loaded YAML document, naming the field of the first problem."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, expected: str, got: Any) -> ReferenceFileError:
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return ReferenceFileError(f"{self.source}: {where}: expected {expected}, got {shown}")

    def get(self, data: Mapping, key: str, where: str, types: tuple, expected: str) -> Any:
        if key not in data:
            raise ReferenceFileError(f"{self.source}: {where}{key}: missing (expected {expected})")
        value = data[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise self.fail(where + key, expected, value)
        return value

    def reference(self, data: Any) -> Reference:
        if not isinstance(data, Mapping):
            raise self.fail("top level", "a mapping (a modelmon reference profile)", data)
        version = self.get(data, "schema_version", "", (int,), "an integer")
        if version != SCHEMA_VERSION:
            raise self.fail("schema_version", f"{SCHEMA_VERSION} (this modelmon's format)", version)
        trained = self.get(data, "trained_at", "", (str, datetime), "an ISO 8601 timestamp")
        try:
            trained_at = _parse_time(trained)
        except ValueError:
            raise self.fail("trained_at", "an ISO 8601 timestamp", trained) from None
        features = self.get(data, "features", "", (dict,), "a mapping of feature name to profile")
        outputs = data.get("outputs") or {}
        if not isinstance(outputs, dict):
            raise self.fail("outputs", "a mapping of output name to profile", outputs)
        ref = Reference(
            model=str(self.get(data, "model", "", (str, int, float), "a model name")),
            version=str(self.get(data, "version", "", (str, int, float), "a version string")),
            trained_at=trained_at,
            rows=self.positive_int(data, "rows", ""),
            features={str(k): self.column(v, f"features.{k}.") for k, v in features.items()},
            outputs={str(k): self.column(v, f"outputs.{k}.") for k, v in outputs.items()},
            evaluation=self.evaluation(data.get("evaluation") or {}),
            calibration=self.calibration(data.get("calibration")),
        )
        if not ref.features and not ref.outputs:
            raise self.fail("features", "at least one feature or output", features)
        stored = data.get("hash")
        if stored is not None and stored != ref.hash:
            raise ReferenceFileError(
                f"{self.source}: hash: {stored!r} does not match the content ({ref.hash!r}); "
                "if the file was edited on purpose, delete the hash line and it is recomputed"
            )
        return ref

    def evaluation(self, data: Any) -> dict[str, float]:
        if not isinstance(data, dict):
            raise self.fail("evaluation", "a mapping of metric (accuracy, mae) to score", data)
        try:
            return _check_evaluation(data, "evaluation")
        except ValueError as exc:
            raise ReferenceFileError(f"{self.source}: {exc}") from None

    def calibration(self, data: Any) -> Calibration | None:
        if data is None:
            return None
        try:
            return Calibration.from_dict(data)
        except ValueError as exc:
            raise ReferenceFileError(f"{self.source}: {exc}") from None

    def positive_int(self, data: Mapping, key: str, where: str) -> int:
        value = self.get(data, key, where, (int,), "a non-negative integer")
        if value < 0:
            raise self.fail(where + key, "a non-negative integer", value)
        return value

    def number(self, data: Mapping, key: str, where: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where + key, "a finite number or null", value)
        return float(value)

    def text(self, data: Mapping, where: str) -> dict[str, Any]:
        words = self.get(data, "vocabulary", where, (list,), "a list of tokens")
        if len(words) > MAX_VOCABULARY or not all(isinstance(w, str) for w in words):
            raise self.fail(where + "vocabulary", f"at most {MAX_VOCABULARY} token strings", f"{len(words)} items")
        share = self.number(data, "unknown_token_share", where)
        if share is None or not 0 <= share <= 1:
            raise self.fail(where + "unknown_token_share", "a share between 0 and 1", share)
        return {"vocabulary": tuple(words), "unknown_token_share": share}

    def column(self, data: Any, where: str) -> ColumnProfile:
        if not isinstance(data, Mapping):
            raise self.fail(where.rstrip("."), "a mapping with type, shares, ...", data)
        kind = self.get(data, "type", where, (str,), "numeric, categorical or text")
        if kind not in KINDS:
            raise self.fail(where + "type", "numeric, categorical or text", kind)
        count = self.positive_int(data, "count", where)
        if kind in ("numeric", "text"):
            edges = self.get(data, "edges", where, (list,), "a non-empty list of increasing numbers")
            if not edges or any(isinstance(e, bool) or not isinstance(e, (int, float)) for e in edges) or any(
                not math.isfinite(e) for e in edges
            ) or any(b <= a for a, b in zip(edges, edges[1:])):
                raise self.fail(where + "edges", "a non-empty list of strictly increasing finite numbers", edges)
            profile = ColumnProfile(
                kind=kind,
                edges=tuple(float(e) for e in edges),
                shares={},
                count=count,
                **{k: self.number(data, k, where) for k in ("mean", "stddev", "min", "max")},
                **(self.text(data, where) if kind == "text" else {}),
            )
        else:
            cats = self.get(data, "categories", where, (list,), "a list of category strings")
            if len(cats) > MAX_TOP_K:
                raise self.fail(where + "categories", f"at most {MAX_TOP_K} categories", f"{len(cats)} categories")
            names = [str(c) for c in cats]
            if len(set(names)) != len(names) or set(names) & set(SPECIAL_BINS):
                raise self.fail(where + "categories", "distinct categories, none named like a special bin", cats)
            profile = ColumnProfile(kind=kind, categories=tuple(names), shares={}, count=count)
        shares = self.get(data, "shares", where, (dict,), "a mapping of bin label to share")
        shares = {str(k): v for k, v in shares.items()}
        labels = profile.bin_labels
        if set(shares) != set(labels):
            raise self.fail(
                where + "shares",
                f"exactly the bins {labels}",
                sorted(set(shares) ^ set(labels)),
            )
        for label in labels:
            value = shares[label]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise self.fail(f"{where}shares.{label}", "a share between 0 and 1", value)
        total = sum(shares.values())
        if abs(total - 1) > 1e-6:
            raise self.fail(where + "shares", "shares that sum to 1", round(total, 9))
        return dataclasses.replace(profile, shares={label: float(shares[label]) for label in labels})
