import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every batched-simulator test runs on one torch thread (tests/conftest.py)."""
    yield
