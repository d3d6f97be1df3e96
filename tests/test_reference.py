"""Reference profiles: made from data, saved, loaded, and rejected when malformed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from modelmon import Reference, ReferenceFileError
from modelmon.cli import main as cli_main
from conftest import training_frame

HOUSE_PRICES = Path(__file__).resolve().parents[1] / "demo" / "data" / "train.csv"


def test_profile_has_quantile_bins_shares_and_statistics(reference):
    area = reference.features["area"]
    data = training_frame()["area"]
    assert area.kind == "numeric"
    assert 8 <= len(area.edges) - 1 <= 10
    assert area.edges[0] == data.min() and area.edges[-1] == data.max()
    assert sum(area.shares.values()) == pytest.approx(1.0)
    in_range = [s for label, s in area.shares.items() if not label.startswith("__")]
    assert all(s == pytest.approx(0.1, abs=0.01) for s in in_range)  # quantile bins: equal shares
    assert area.mean == pytest.approx(data.mean()) and area.stddev == pytest.approx(data.std(ddof=1))
    assert area.count == 2000


def test_categorical_profile_orders_categories_by_frequency(reference):
    city = reference.features["city"]
    assert city.kind == "categorical" and city.categories == ("paris", "lyon", "nice")
    assert city.shares["__unseen__"] == 0 and city.shares["paris"] == pytest.approx(0.5, abs=0.03)
    assert reference.outputs["price"].kind == "numeric"


def test_top_k_puts_the_tail_in_unseen():
    values = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
    ref = Reference.from_data({"x": values}, model="m", version="1", top_k=2)
    assert ref.features["x"].categories == ("a", "b")
    assert ref.features["x"].shares["__unseen__"] == pytest.approx(0.2)


def test_missing_values_are_profiled():
    ref = Reference.from_data(
        {"x": np.array([1.0, np.nan, 3.0, 4.0]), "c": np.array(["a", None, "a", "b"], dtype=object)},
        model="m", version="1",
    )
    assert ref.features["x"].shares["__missing__"] == 0.25
    assert ref.features["c"].shares["__missing__"] == 0.25


def test_dataframe_and_dict_give_the_same_profile():
    data = training_frame(500)
    from_dict = Reference.from_data(data, model="m", version="1", prediction="price", trained_at="2026-01-01")
    from_frame = Reference.from_data(pd.DataFrame(data), model="m", version="1", prediction="price",
                                     trained_at="2026-01-01")
    assert from_dict.hash == from_frame.hash


def test_nullable_pandas_integers_are_numeric():
    ref = Reference.from_data(pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}), model="m", version="1")
    assert ref.features["n"].kind == "numeric" and ref.features["n"].shares["__missing__"] == pytest.approx(1 / 3)


def test_save_and_load_round_trip(reference, tmp_path):
    path = tmp_path / "reference.yaml"
    reference.save(path)
    loaded = Reference.load(path)
    assert loaded == reference and loaded.hash == reference.hash
    assert yaml.safe_load(path.read_text())["schema_version"] == 1


def test_from_data_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not in the data"):
        Reference.from_data({"x": [1.0]}, model="m", version="1", prediction="y")
    with pytest.raises(ValueError, match="different lengths"):
        Reference.from_data({"x": [1.0], "z": [1.0, 2.0]}, model="m", version="1")
    with pytest.raises(ValueError, match="empty"):
        Reference.from_data({"x": []}, model="m", version="1")


def corrupt(reference, tmp_path, edit) -> Path:
    data = reference.to_dict()
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit, field, expected",
    [
        (lambda d: d.update(schema_version=9), "schema_version", "1"),
        (lambda d: d.pop("features"), "features", "missing"),
        (lambda d: d.update(trained_at="yesterday"), "trained_at", "ISO 8601"),
        (lambda d: d["features"]["area"].update(type="float"), "features.area.type", "categorical or text"),
        (lambda d: d["features"]["area"].update(edges=[3, 2, 1]), "features.area.edges", "increasing"),
        (lambda d: d["features"]["area"].update(edges="1,2"), "features.area.edges", "list"),
        (lambda d: d["features"]["area"]["shares"].pop("__missing__"), "features.area.shares", "exactly the bins"),
        (lambda d: d["features"]["city"]["shares"].update(paris=7), "features.city.shares.paris", "between 0 and 1"),
        (lambda d: d["features"]["city"].update(categories=["a", "a"]), "features.city.categories", "distinct"),
        (lambda d: d["features"]["city"].update(count=-1), "features.city.count", "non-negative"),
        (lambda d: d["outputs"]["price"].update(mean="high"), "outputs.price.mean", "finite number"),
        (lambda d: d.update(hash="0" * 12), "hash", "does not match"),
    ],
)
def test_malformed_file_names_file_field_and_expectation(reference, tmp_path, edit, field, expected):
    path = corrupt(reference, tmp_path, edit)
    with pytest.raises(ReferenceFileError) as err:
        Reference.load(path)
    message = str(err.value)
    assert str(path) in message and field in message and expected in message, message


def test_unreadable_and_non_yaml_files_are_clear(tmp_path):
    with pytest.raises(ReferenceFileError, match="cannot read"):
        Reference.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [unclosed")
    with pytest.raises(ReferenceFileError, match="not valid YAML"):
        Reference.load(bad)
    bad.write_text("- a list")
    with pytest.raises(ReferenceFileError, match="top level: expected a mapping"):
        Reference.load(bad)


def test_edited_file_without_hash_loads(reference, tmp_path):
    path = corrupt(reference, tmp_path, lambda d: (d.pop("hash"), d.update(version="2.0")))
    assert Reference.load(path).version == "2.0"


def test_cli_profiles_the_house_prices_csv(tmp_path, capsys):
    out = tmp_path / "reference.yaml"
    code = cli_main([
        "profile", str(HOUSE_PRICES), "--model", "house-price", "--version", "1.0", "--prediction", "SalePrice",
        "--exclude", "Id", "--categorical", "MSSubClass", "--trained-at", "2026-11-01T00:00:00Z", "-o", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    ref = Reference.load(out)
    assert len(ref.features) == 79 and list(ref.outputs) == ["SalePrice"]
    assert ref.features["MSSubClass"].kind == "categorical" and "60" in ref.features["MSSubClass"].categories
    assert ref.features["LotFrontage"].shares["__missing__"] == pytest.approx(259 / 1460)
    assert ref.features["Alley"].kind == "categorical"
    assert ref.rows == 1460


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("a,b\n1,2\n3\n")
    assert cli_main(["profile", str(csv), "--model", "m", "--version", "1", "-o", str(tmp_path / "r.yaml")]) == 2
    assert "bad.csv:3: 1 cells, the header has 2" in capsys.readouterr().err


def test_text_profile_bins_token_counts_and_keeps_a_vocabulary(tmp_path):
    texts = np.array(["a cosy flat near the park", "big house", None, "Big big HOUSE with garden"], dtype=object)
    ref = Reference.from_data({"description": texts}, model="m", version="1", text=["description"])
    profile = ref.features["description"]
    assert profile.kind == "text" and profile.edges[0] == 2 and profile.edges[-1] == 6
    assert profile.vocabulary[0] == "big" and profile.unknown_token_share == 0.0
    assert profile.shares["__missing__"] == 0.25
    ref.save(tmp_path / "r.yaml")
    assert Reference.load(tmp_path / "r.yaml") == ref
