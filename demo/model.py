"""The demo model: house prices (Ames) with scikit-learn, as in the seed article."""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
BUILD = Path(__file__).parent / "build"
MODEL_PATH = BUILD / "model.joblib"
REFERENCE_PATH = BUILD / "reference.yaml"

MODEL = "house-price"
VERSION = "1.0.0"
TARGET = "SalePrice"
NUMERIC = ["LotArea", "LotFrontage", "OverallQual", "OverallCond", "YearBuilt", "YearRemodAdd", "GrLivArea",
           "TotalBsmtSF", "1stFlrSF", "GarageCars", "FullBath", "TotRmsAbvGrd"]
CATEGORICAL = ["Neighborhood", "MSZoning", "BsmtQual", "KitchenQual", "CentralAir"]
FEATURES = NUMERIC + CATEGORICAL
