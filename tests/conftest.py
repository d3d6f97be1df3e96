"""Shared fixtures: a small reference profile and a way to read scraped samples."""
from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from demo.native import free_port, stop_process  # noqa: F401 (shared with the tests)
from modelmon import ModelMonitor, Reference


def training_frame(rows: int = 2000, seed: int = 1) -> dict[str, np.ndarray]:
    """Synthetic training data: two numeric features, one categorical, one output."""
    rng = np.random.default_rng(seed)
    return {
        "area": rng.normal(100.0, 20.0, rows),
        "rooms": rng.integers(1, 8, rows).astype(float),
        "city": rng.choice(["paris", "lyon", "nice"], rows, p=[0.5, 0.3, 0.2]).astype(object),
        "price": rng.normal(300.0, 50.0, rows),
    }


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference.from_data(
        training_frame(), model="house", version="1.0", prediction="price", trained_at="2026-01-01T00:00:00Z"
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def monitor(reference, registry) -> ModelMonitor:
    return ModelMonitor("house", "1.0", reference, registry=registry, dependencies=("numpy",))


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, keyed by (sample name, frozenset of label pairs)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    """The value of one sample; fails listing near misses if it is absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        near = [dict(k[1]) for k in samples if k[0] == name][:5]
        raise AssertionError(f"no sample {name}{labels}; some present: {near}")
    return samples[key]


def total(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)
