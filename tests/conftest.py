"""Shared fixtures."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.browser import chromium
from tests.collect_netns import Bed, unavailable
from tests.kube_emulator import KubeEmulator

# --- store: every store test runs on SQLite and on a real PostgreSQL server ------------------------

PG_BASE_URL = os.environ.get("NETPOL_GEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_engine() -> sa.Engine:
    return sa.create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to an empty store: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'netpol-gen.db'}"
        return
    engine = _pg_engine()
    schema = f"netpol_test_{uuid.uuid4().hex[:12]}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"no PostgreSQL server answers at {PG_BASE_URL} ({str(exc.orig).splitlines()[0]})")
    try:
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# --- the network-namespace test bed (pods as namespaces on veth bridges): needs root ------------------


@pytest.fixture
def bed() -> Iterator[Bed]:
    """A fresh test bed, removed afterwards; skipped (with the reason printed) where it cannot be built."""
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    bed = Bed().open()
    try:
        yield bed
    finally:
        bed.close()


# --- a headless Chromium (the map page, diff's Mermaid chart) ----------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One Chromium per test process; skipped, with the reason printed, where it cannot run."""
    with chromium() as launched:
        yield launched


# --- the Kubernetes API: the stateful emulator over real HTTP, and a kubeconfig for it ---------------


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[tuple[KubeEmulator, Path]]:
    emulator = KubeEmulator(time.time)
    kubeconfig = tmp_path / "kubeconfig"
    with emulator.serving(kubeconfig):
        yield emulator, kubeconfig
