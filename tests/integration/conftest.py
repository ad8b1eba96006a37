import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rfkit  # noqa: E402


@pytest.fixture(scope="session")
def services():
    """Real Kafka + Redis from tools/services.sh (env from .run/services.env). Fails, never
    skips, when they are missing or silent."""
    return rfkit.connect_services()


@pytest.fixture(scope="session")
def model():
    return rfkit.Model()


@pytest.fixture(scope="session")
def daemon_bin():
    return rfkit.daemon_path()


@pytest.fixture(autouse=True)
def close_readers():
    """Every TopicReader a test opened is closed when it ends, passed or failed."""
    yield
    for r in list(rfkit.OPEN_READERS):
        r.close()
