"""The hot path prints nothing into the service: no numpy warning escapes observe,
observe_batch or record_outcome, whatever values they are given.

numpy warns on stderr when it converts a masked element to nan, casts a complex number
to a float or overflows a float; a warnings filter would be the host's business, so the
package must not trigger them. Masked elements count as missing, like NaN.
"""
from __future__ import annotations

import datetime
import decimal
import fractions
import random
import warnings

import numpy as np
import pytest

from modelmon import ModelMonitor, Reference
from conftest import scrape, total, training_frame, value

M = dict(model="house", version="1.0")
ROW = {"area": 100.0, "rooms": 3.0, "city": "paris"}


def no_warnings(call) -> None:
    """Run ``call``; fail naming every warning it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []


@pytest.mark.filterwarnings("error")  # and a warning turned into an error would be an internal error
def test_masked_values_are_missing_and_silent(monitor, registry):
    no_warnings(lambda: monitor.observe(ROW, np.ma.masked, prediction_id="masked-prediction"))
    no_warnings(lambda: monitor.observe({**ROW, "area": np.ma.masked, "city": np.ma.masked}, 300.0,
                                        prediction_id="p"))
    no_warnings(lambda: monitor.observe_batch(
        {"area": np.ma.masked_array([1.0, 2.0, 3.0], mask=[True, False, False]),
         "rooms": np.ma.masked_array([1, 2, 3], mask=[False, True, False]),
         "city": np.ma.masked_array(["paris", "lyon", "nice"], mask=[False, False, True])},
        np.ma.masked_array([250.0, 300.0, 350.0], mask=[True, False, False]), prediction_ids=["b0", "b1", "b2"]))
    no_warnings(lambda: monitor.observe_batch({"area": [np.ma.masked, 100.0], "rooms": [1.0, 2.0],
                                               "city": ["paris", np.ma.masked]}, [np.ma.masked, 300.0]))
    results = []
    no_warnings(lambda: results.extend([
        monitor.record_outcome("p", np.ma.masked),  # a masked label cannot be compared
        monitor.record_outcome("masked-prediction", 300.0),  # nor a masked prediction
        monitor.record_outcome("b0", 300.0),
        monitor.record_outcome("b1", np.ma.masked_array(310.0, mask=False)),  # an unmasked 0-d array is a number
    ]))
    assert results == [False, False, False, True]
    samples = scrape(registry)
    assert total(samples, "modelmon_internal_errors_total") == 0
    assert value(samples, "modelmon_outcomes_unmatched_total", reason="invalid", **M) == 3
    # missing, like NaN: the scalar observes, the batch's masked elements, the list's masked constants
    assert value(samples, "modelmon_prediction_bin_total", output="price", bin="__missing__", **M) == 3
    assert value(samples, "modelmon_feature_bin_total", feature="area", bin="__missing__", **M) == 3
    assert value(samples, "modelmon_feature_bin_total", feature="rooms", bin="__missing__", **M) == 1
    assert value(samples, "modelmon_feature_bin_total", feature="city", bin="__missing__", **M) == 3


ODD_SCALARS = [
    np.ma.masked, np.ma.masked_array(1.0, mask=True), np.ma.masked_array(2.0, mask=False), np.datetime64("2026-01-01"),
    np.datetime64("NaT"), np.timedelta64(3, "s"), np.timedelta64("NaT"), decimal.Decimal("1.5"), decimal.Decimal("NaN"),
    decimal.Decimal("sNaN"), decimal.Decimal("Infinity"), decimal.Decimal("1e400"), fractions.Fraction(1, 3), 10**400,
    -10**400, 2**63, np.uint64(2**64 - 1), np.int64(-2**63), np.float16(65504), np.longdouble("1e4000"), complex(1, 2),
    np.complex128(1j), np.array(1j), np.array([1.0]), np.array(1.0), np.array([[1.0]]), np.array([]), np.array(["x"]),
    np.str_("paris"), np.bytes_(b"paris"), b"\xff", "paris", "", "nan", "1e999", None, float("nan"), float("inf"), -0.0,
    True, np.bool_(True), datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), object(), [], {}, (1,),
    np.float32("inf"), np.int8(-128), np.void(b"ab"), np.array([1.0], dtype=object), 250.0, 300, "lyon",
]


def odd_columns(rng: random.Random, n: int) -> list:
    return [
        np.ma.masked_array(np.arange(n, dtype=float), mask=[rng.random() < 0.5 for _ in range(n)]),
        np.ma.masked_array(np.array(["paris"] * n), mask=[i % 2 == 0 for i in range(n)]),
        np.ma.masked_array(np.arange(n), mask=True),
        np.array([rng.choice(ODD_SCALARS) for _ in range(n)], dtype=object),
        [rng.choice(ODD_SCALARS) for _ in range(n)],
        np.array([10**30] * n, dtype=object), np.array([np.datetime64("2026-01-01")] * n),
        np.array([np.timedelta64(1, "s")] * n), np.array([decimal.Decimal("1.5")] * n, dtype=object),
        np.full(n, np.nan), np.full(n, np.inf, dtype=np.float32), np.array([1 + 2j] * n), np.array([True] * n),
        np.array([2**64 - 1] * n, dtype=np.uint64), np.full(n, np.longdouble("1e4000")), np.full(n, 1.7e308),
        np.full(n, -1.7e308), np.array([b"x"] * n), np.zeros((n, 2)), np.zeros(n + 1), np.arange(float(n)) * 100,
    ]


def test_fuzzed_hot_path_raises_nothing_and_warns_nothing(registry):
    frame = training_frame()
    reference = Reference.from_data(frame, model="house", version="1.0", prediction="price",
                                    trained_at="2026-01-01T00:00:00Z")
    classes = Reference.from_data({"area": frame["area"], "city": frame["city"]}, model="city", version="1.0",
                                  prediction="city", trained_at="2026-01-01T00:00:00Z")
    monitors = [ModelMonitor("house", "1.0", reference, registry=registry),
                ModelMonitor("city", "1.0", classes, registry=registry)]
    rng = random.Random(20261201)
    calls = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3000):
            monitor, kind = rng.choice(monitors), rng.random()
            if kind < 0.4:
                row = {k: rng.choice(ODD_SCALARS) if rng.random() < 0.6 else v for k, v in ROW.items()}
                monitor.observe(row, rng.choice(ODD_SCALARS), prediction_id=f"p{i}")
            elif kind < 0.7:
                monitor.record_outcome(f"p{rng.randrange(i + 1)}", rng.choice(ODD_SCALARS))
            else:
                n = rng.randrange(1, 6)
                columns = {k: rng.choice(odd_columns(rng, n)) for k in ROW}
                monitor.observe_batch(columns, rng.choice(odd_columns(rng, n)),
                                      prediction_ids=[f"b{i}-{j}" for j in range(n)])
            calls += 1
    assert calls == 3000  # nothing raised into the caller
    assert sorted({f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught}) == []
    samples = scrape(registry)
    assert total(samples, "modelmon_predictions_total") > 3000  # and the rows were counted
