"""Shared test setup. One torch thread: with two, torch slows ~50x when the other core is busy."""
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def private_trust_list(tmp_path_factory):
    """The .pt2 trust list of the tests, not the user's (`ulvm.deploy.trust`); subprocesses inherit it."""
    import os

    before = os.environ.get("ULVM_TRUSTED_PACKAGES")
    os.environ["ULVM_TRUSTED_PACKAGES"] = str(tmp_path_factory.mktemp("trust") / "trusted_packages.json")
    yield
    if before is None:
        os.environ.pop("ULVM_TRUSTED_PACKAGES")
    else:
        os.environ["ULVM_TRUSTED_PACKAGES"] = before


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real PH2 data beside the checkout (never committed); skip cleanly where it is absent."""
    if not (SHARED_REALDATA / "PH2" / "images").is_dir():
        pytest.skip(f"real data not found at {SHARED_REALDATA}")
    return SHARED_REALDATA
