"""modelmon skew: training rows against the serving inputs a real monitor logged.

The Ames rows go through a feature pipeline twice: once as at training time, once as
at serving time with three bugs (square feet served as square metres, living area
clipped, neighbourhood prices looked up in a stale table). The served rows are
observed by a ModelMonitor writing real event files (and shipped to a real
Elasticsearch for the last test)."""
from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from elastic import elastic, es, namespace  # noqa: F401 (fixtures)
from prometheus_client import CollectorRegistry
from scipy import stats

from modelmon import ModelMonitor, Reference
from modelmon.cli import main
from modelmon.pipeline.events import EventLog, Redaction
from modelmon.pipeline.shipper import Shipper, ShipperConfig

AMES = Path(__file__).resolve().parents[1] / "demo" / "data" / "train.csv"
SQM_PER_SQFT = 0.09290304
CLIP = 2500.0
COLUMNS = ["Id", "LotArea", "GrLivArea", "NbhdPrice", "LotFrontage", "OverallQual", "TotalSF", "MSZoning",
           "Neighborhood", "SalePrice"]


def _price_table(rows: list[dict], until_year: int) -> dict[str, float]:
    prices = defaultdict(list)
    for row in rows:
        if int(row["YrSold"]) <= until_year:
            prices[row["Neighborhood"]].append(float(row["SalePrice"]))
    return {name: statistics.median(values) for name, values in prices.items()}


ROWS = list(csv.DictReader(AMES.open(newline="")))
CURRENT = _price_table(ROWS, 2010)
STALE = {**CURRENT, **_price_table(ROWS, 2007)}  # a lookup table last refreshed in 2007


def features(row: dict, *, serving_bugs: bool = False) -> dict:
    """The feature pipeline; with ``serving_bugs``, as the buggy serving path computes it."""
    lot_area, living = float(row["LotArea"]), float(row["GrLivArea"])
    return {
        "LotArea": lot_area * SQM_PER_SQFT if serving_bugs else lot_area,
        "GrLivArea": min(living, CLIP) if serving_bugs else living,
        "NbhdPrice": (STALE if serving_bugs else CURRENT)[row["Neighborhood"]],
        "LotFrontage": math.nan if row["LotFrontage"] == "NA" else float(row["LotFrontage"]),
        "OverallQual": int(row["OverallQual"]),
        "TotalSF": float(row["TotalBsmtSF"]) + float(row["1stFlrSF"]) + float(row["2ndFlrSF"]),
        "MSZoning": row["MSZoning"],
        "Neighborhood": row["Neighborhood"],
    }


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> tuple[Path, Reference]:
    """The training CSV (Id, features, SalePrice) and its reference profile."""
    path = tmp_path_factory.mktemp("skew") / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in ROWS:
            f = features(row)
            cells = [row["Id"], *("NA" if isinstance(v, float) and math.isnan(v) else v for v in f.values()),
                     row["SalePrice"]]
            writer.writerow(cells)
    frame = {name: [features(row)[name] for row in ROWS] for name in COLUMNS[1:-1]}
    frame = {k: np.array(v, dtype=object if k in ("MSZoning", "Neighborhood") else float) for k, v in frame.items()}
    frame["SalePrice"] = np.array([float(r["SalePrice"]) for r in ROWS])
    reference = Reference.from_data(frame, model="house-price", version="1.4.0", prediction="SalePrice")
    return path, reference


def serve(directory: Path, reference: Reference, rows: list[dict], *, serving_bugs: bool, id_as_input: bool = False,
          transform=None, **log_options) -> Path:
    """Observe ``rows`` through a monitor that logs every prediction to ``directory``."""
    log = EventLog(directory, **log_options)
    monitor = ModelMonitor("house-price", "1.4.0", reference, registry=CollectorRegistry(), events=log)
    for row in rows:
        inputs = features(row, serving_bugs=serving_bugs)
        if transform:
            inputs = transform(inputs)
        if id_as_input:
            monitor.observe({"Id": int(row["Id"]), **inputs}, float(row["SalePrice"]))
        else:
            monitor.observe(inputs, float(row["SalePrice"]), prediction_id=row["Id"])
    log.close()
    return directory


@pytest.fixture(scope="module")
def buggy(training, tmp_path_factory) -> Path:
    return serve(tmp_path_factory.mktemp("buggy") / "events", training[1], ROWS, serving_bugs=True)


def skew(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["skew", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_names_exactly_the_three_skewed_features_with_their_numbers(training, buggy, tmp_path, capsys):
    train_csv, _ = training
    code, out, err = skew(capsys, "--training", train_csv, "--id-column", "Id", "--serving", buggy,
                          "--json", tmp_path / "skew.json")
    assert code == 1
    report = json.loads((tmp_path / "skew.json").read_text())
    assert report["skewed"] == ["LotArea", "GrLivArea", "NbhdPrice"]
    assert report["serving_id_field"] == "event.id"
    assert report["rows"]["joined"] == len(ROWS) == 1460
    by_name = {f["feature"]: f for f in report["features"]}
    assert set(by_name) == set(COLUMNS[1:-1])  # SalePrice was never logged as an input
    assert report["not_logged"] == ["SalePrice"]
    for name in ("LotFrontage", "OverallQual", "TotalSF", "MSZoning", "Neighborhood"):
        assert by_name[name]["mismatched"] == 0 and not by_name[name]["skewed"], name

    lot = by_name["LotArea"]  # a unit change: every row, by the same factor
    assert lot["mismatched"] == 1460 and lot["share"] == 1.0
    assert lot["median_ratio"] == pytest.approx(SQM_PER_SQFT, rel=1e-9)
    biggest = max(ROWS, key=lambda r: float(r["LotArea"]))
    assert lot["largest"][0]["id"] == biggest["Id"]
    assert lot["max_abs_diff"] == pytest.approx(float(biggest["LotArea"]) * (1 - SQM_PER_SQFT))

    living = by_name["GrLivArea"]  # a clip: only the rows above the cap
    above = [float(r["GrLivArea"]) for r in ROWS if float(r["GrLivArea"]) > CLIP]
    assert living["mismatched"] == len(above) == 70
    assert living["max_abs_diff"] == max(above) - CLIP
    assert all(e["serving"] == CLIP for e in living["largest"])
    assert [e["abs_diff"] for e in living["largest"]] == sorted((a - CLIP for a in above), reverse=True)[:5]

    stale = by_name["NbhdPrice"]  # a stale lookup: rows of the neighbourhoods whose price moved
    moved = sum(CURRENT[r["Neighborhood"]] != STALE[r["Neighborhood"]] for r in ROWS)
    assert stale["mismatched"] == moved and 0 < moved < 1460

    assert "LotArea" in out and out.count("SKEW") == 3
    assert err.strip() == "skew: mismatch share above 0.01 in LotArea, GrLivArea, NbhdPrice"


def test_the_command_exits_1_for_ci(training, buggy):
    done = subprocess.run(
        [str(Path(sys.executable).with_name("modelmon")), "skew", "--training", str(training[0]), "--id-column", "Id",
         "--serving", str(buggy), "--features", "OverallQual,GrLivArea"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "GrLivArea" in done.stderr and "OverallQual" not in done.stderr


def test_a_faithful_serving_path_has_no_skew_missing_values_included(training, tmp_path, capsys):
    events = serve(tmp_path / "events", training[1], ROWS, serving_bugs=False)
    code, out, _ = skew(capsys, "--training", training[0], "--id-column", "Id", "--serving", events,
                        "--json", tmp_path / "skew.json")
    report = json.loads((tmp_path / "skew.json").read_text())
    assert code == 0 and report["skewed"] == []
    assert all(f["mismatched"] == 0 and f["compared"] == 1460 for f in report["features"])
    assert "SKEW" not in out


def test_tolerances_are_relative_and_absolute(training, tmp_path, capsys):
    nudged = serve(tmp_path / "events", training[1], ROWS, serving_bugs=False,
                   transform=lambda f: {**f, "TotalSF": f["TotalSF"] * (1 + 1e-9)})
    base = ["--training", training[0], "--id-column", "Id", "--serving", nudged, "--features", "TotalSF"]
    assert skew(capsys, *base)[0] == 0  # within the default rtol 1e-6
    assert skew(capsys, *base, "--rtol", "1e-12", "--atol", "0")[0] == 1
    assert skew(capsys, *base, "--rtol", "0", "--atol", "1e-3")[0] == 0  # 1e-9 of at most 11752 sq ft


def test_threshold_is_a_share_of_rows(training, buggy, capsys):
    base = ["--training", training[0], "--id-column", "Id", "--serving", buggy, "--features", "GrLivArea"]
    assert skew(capsys, *base, "--max-mismatch", "0.05")[0] == 0  # 70 / 1460 = 4.8%
    assert skew(capsys, *base, "--max-mismatch", "0.04")[0] == 1


def test_joins_on_a_logged_id_input_and_keeps_the_newest_event_of_an_id(training, tmp_path, capsys):
    events = tmp_path / "events"
    broken = {**ROWS[0], "OverallQual": "1"}  # a first, wrong answer for id 1, then the right one
    serve(events, training[1], [broken, *ROWS[:100]], serving_bugs=False, id_as_input=True)
    code, _, _ = skew(capsys, "--training", training[0], "--id-column", "Id", "--serving", events,
                      "--json", tmp_path / "skew.json")
    report = json.loads((tmp_path / "skew.json").read_text())
    assert report["serving_id_field"] == "modelmon.inputs.Id"
    assert report["rows"]["joined"] == 100 and report["rows"]["serving_duplicate_ids"] == 1
    assert code == 0 and report["skewed"] == []


def test_redacted_inputs_are_not_compared(training, tmp_path, capsys):
    events = serve(tmp_path / "events", training[1], ROWS[:200], serving_bugs=True,
                   redaction=Redaction(mask={"GrLivArea"}, hash={"Neighborhood"}, key=b"k"))
    skew(capsys, "--training", training[0], "--id-column", "Id", "--serving", events, "--json", tmp_path / "s.json")
    by_name = {f["feature"]: f for f in json.loads((tmp_path / "s.json").read_text())["features"]}
    assert by_name["GrLivArea"]["redacted"] == 200 and by_name["GrLivArea"]["compared"] == 0
    assert by_name["Neighborhood"]["redacted"] == 200 and not by_name["Neighborhood"]["skewed"]
    assert by_name["LotArea"]["skewed"]


def test_without_a_shared_id_compares_distributions(training, buggy, tmp_path, capsys):
    code, out, _ = skew(capsys, "--training", training[0], "--no-id", "--id-column", "Id", "--serving", buggy,
                        "--json", tmp_path / "d.json")
    report = json.loads((tmp_path / "d.json").read_text())
    assert code == 1
    # A unit change and a stale table move whole distributions; clipping 4.8% of the rows moves
    # GrLivArea's by less than the effect-size thresholds (KS D 0.048). At 1,460 rows a side
    # their intervals (simultaneous over the report: +/- 0.07) reach across the 0.1 threshold:
    # the stale table's D (0.137) is significant but not an effect called with confidence.
    assert report["skewed"] == ["LotArea"] and report["too_few_to_call"] == ["GrLivArea", "NbhdPrice"]
    lot = next(f for f in report["features"] if f["feature"] == "LotArea")
    train_lot = np.array([float(r["LotArea"]) for r in ROWS])
    expected = stats.ks_2samp(train_lot, train_lot * SQM_PER_SQFT)
    ks = next(t for t in lot["tests"] if t["test"] == "ks_2samp")
    assert ks["statistic"] == pytest.approx(expected.statistic, abs=1e-9)
    assert ks["p_value"] == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert "Id" not in [f["feature"] for f in report["features"]] and "DIFFERS" in out


@pytest.mark.parametrize("args, message", [
    (["--id-column", "Nope"], "no id column 'Nope'"),
    (["--id-column", "Id", "--serving-id-field", "labels.none"], "no serving event matched a training id"),
    ([], "give --id-column"),
    (["--id-column", "Id", "--since", "yesterday"], "--since: expected a duration"),
    (["--id-column", "Id", "--features", "Bogus"], "--features: not training columns: Bogus"),
])
def test_usage_errors_exit_2_with_one_line(training, buggy, capsys, args, message):
    code, _, err = skew(capsys, "--training", training[0], "--serving", buggy, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_missing_event_directory_is_a_usage_error(training, tmp_path, capsys):
    code, _, err = skew(capsys, "--training", training[0], "--id-column", "Id", "--serving", tmp_path / "none")
    assert code == 2 and "no such event file or directory" in err


def test_reads_the_same_events_from_elasticsearch(training, buggy, es, elastic, tmp_path, capsys):
    ns = namespace()
    shipper = Shipper(es, ShipperConfig(buggy, namespace=ns, state_dir=tmp_path / "state"))
    while shipper.run_once():
        pass
    stream = shipper.config.data_stream
    es.indices.refresh(index=stream)
    args = ["--training", training[0], "--id-column", "Id", "--since", "1h"]
    from_file = skew(capsys, *args, "--serving", buggy, "--json", tmp_path / "file.json")
    from_es = skew(capsys, *args, "--serving", elastic.url, "--es-index", stream, "--json", tmp_path / "es.json")
    assert from_es[0] == from_file[0] == 1
    file_report, es_report = (json.loads((tmp_path / n).read_text()) for n in ("file.json", "es.json"))
    for report in (file_report, es_report):
        del report["serving"]
    assert es_report == file_report
    assert es_report["rows"]["joined"] == 1460
