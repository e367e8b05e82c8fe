import pytest

from tests.contract import harness


@pytest.fixture
def relay(tmp_path):
    """The whole relay in memory on a fake clock (a module may override it with other limits)."""
    r = harness.MemoryRelay(tmp_path)
    yield r
    r.stop()
