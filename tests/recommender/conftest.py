"""Shared fixtures: ml-latest-small loaded and fitted once per session (a couple of seconds)."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recommender.data import Interactions, load_catalog, load_ratings
from recommender.model import ModelParams, SimilarityModel, fit
from services.platform.settings import Settings
from tests.recommender.test_service import Running, start

ROOT = Path(__file__).resolve().parents[2]
RATINGS = ROOT / "data" / "ml-latest-small" / "ratings.csv"
MOVIES = ROOT / "data" / "ml-latest-small" / "movies.csv"


@pytest.fixture(scope="session")
def ml_ratings_path() -> Path:
    return RATINGS


@pytest.fixture(scope="session")
def ml_interactions() -> Interactions:
    return load_ratings(RATINGS)


@pytest.fixture(scope="session")
def ml_model(ml_interactions: Interactions) -> SimilarityModel:
    return fit(ml_interactions, ModelParams(), load_catalog(MOVIES))


@pytest.fixture(scope="session")
def ml_genres() -> dict[int, set[str]]:
    with open(MOVIES, newline="", encoding="utf-8") as fh:
        return {int(r["movieId"]): set(r["genres"].split("|")) for r in csv.DictReader(fh)}


@pytest.fixture
async def rec(settings: Settings) -> AsyncIterator[Running]:
    """A recommender service on a free port, with the session's model."""
    running = await start(settings)
    yield running
    await running.server.close()
