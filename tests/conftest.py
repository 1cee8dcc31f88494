"""Shared test setup. One torch thread: with two, torch slows ~50x when the other core is busy."""
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real PH2 data beside the checkout (never committed); skip cleanly where it is absent."""
    if not (SHARED_REALDATA / "PH2" / "images").is_dir():
        pytest.skip(f"real data not found at {SHARED_REALDATA}")
    return SHARED_REALDATA
