"""Test environment: no telemetry, private homes, headless plots, one CPU thread per process."""
import os
import tempfile
from pathlib import Path

_home = Path(tempfile.mkdtemp(prefix="fedicra-test-home-"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FLWR_HOME", str(_home / "flwr"))
os.environ.setdefault("MPLCONFIGDIR", str(_home / "mpl"))
os.environ.setdefault("XDG_CACHE_HOME", str(_home / "cache"))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FAZ_MINI = Path(os.environ.get("FEDICRA_FAZ_MINI", SHARED_DATA / "faz-octa-mini"))


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


@pytest.fixture
def faz_mini_root():
    if not (FAZ_MINI / "images").is_dir():
        pytest.skip(f"real FAZ sample not found at {FAZ_MINI}")
    return FAZ_MINI


@pytest.fixture(scope="session")
def tiny_faz(tmp_path_factory):
    """A 5-site synthetic FAZ dataset at 32 px, shared by the engine tests."""
    from fedicra.data.synth import synthesize

    root = tmp_path_factory.mktemp("data") / "faz32"
    synthesize("faz", root, size=32, seed=0, scale=0.5)
    return root

