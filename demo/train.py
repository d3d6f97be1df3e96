"""Train the demo model and write its reference profile: ``python -m demo.train``.

A gradient-boosting regressor on 17 features of the Ames house-prices data, fit on
80% of the rows; the reference holds every row's features and the model's
predictions on them (the population the demo traffic samples from) and the mean
absolute error on the 20% held out.
"""
from __future__ import annotations

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelmon import Reference

from .model import BUILD, CATEGORICAL, DATA, FEATURES, MODEL, MODEL_PATH, NUMERIC, REFERENCE_PATH, TARGET, VERSION


def build_pipeline() -> Pipeline:
    encode = ColumnTransformer([
        ("numeric", SimpleImputer(strategy="median"), NUMERIC),
        ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                      OneHotEncoder(handle_unknown="ignore")), CATEGORICAL),
    ])
    return make_pipeline(encode, HistGradientBoostingRegressor(max_iter=200, random_state=0))


def main() -> None:
    frame = pd.read_csv(DATA / "train.csv")
    train, holdout = train_test_split(frame, test_size=0.2, random_state=0)
    model = build_pipeline().fit(train[FEATURES], train[TARGET])
    mae = float(mean_absolute_error(holdout[TARGET], model.predict(holdout[FEATURES])))
    reference_data = frame[FEATURES].copy()
    reference_data[TARGET] = model.predict(frame[FEATURES])
    reference = Reference.from_data(reference_data, model=MODEL, version=VERSION, prediction=TARGET,
                                    categorical=CATEGORICAL, evaluation={"mae": mae})
    BUILD.mkdir(exist_ok=True)
    joblib.dump(model, MODEL_PATH)
    reference.save(REFERENCE_PATH)
    print(f"trained {MODEL} {VERSION} on {len(train)} rows: held-out MAE ${mae:,.0f}; "
          f"wrote {MODEL_PATH} and {REFERENCE_PATH} (hash {reference.hash})")


if __name__ == "__main__":
    main()
