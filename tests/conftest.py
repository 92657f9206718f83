"""Shared test fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# The precision probe caches its per-machine answer; keep tests away from the user's cache.
if "AWCL_CACHE_DIR" not in os.environ:
    os.environ["AWCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="awcl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AWCL_CACHE_DIR"], True)

# Pseudonyms are keyed by a secret (awcl.secret): tests use a throw-away one, never the
# user's ~/.config/awcl/secret. One per session, so subprocesses agree with the test process.
os.environ.pop("AWCL_SECRET", None)
os.environ["AWCL_SECRET_FILE"] = os.path.join(tempfile.mkdtemp(prefix="awcl-test-secret-"), "secret")
atexit.register(shutil.rmtree, os.path.dirname(os.environ["AWCL_SECRET_FILE"]), True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real HC18/POCUS); tests using it skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
