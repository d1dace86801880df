from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def zarr_pipeline():
    """Run a test under zarr-python's own codec pipeline (then restore the process's choice):
    for tests that watch reads through zarr's ``LocalStore``
    (``stzarr.testing.validators.record_reads``),
    which the ``zarrs`` pipeline bypasses (it reads files natively)."""
    from stzarr.store.io_config import active_pipeline, configure_io

    before = active_pipeline()
    configure_io("zarr", before.threads)
    yield
    configure_io(before.requested, before.threads)
