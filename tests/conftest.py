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



@pytest.fixture(scope="session")
def real_runs(tiny_faz, tmp_path_factory):
    """Real tiny runs made once per session (2 methods x 2 rounds, 2 sites of the 32 px synthetic data),
    laid out as the workflow lays them out: runs/<dataset>/<assignment>/<method>/seed<k>."""
    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    root = tmp_path_factory.mktemp("real") / "runs"
    for method in ("fedavg", "local"):
        config = load_config(base={"dataset": str(tiny_faz), "method": method, "sites": [0, 1], "rounds": 2,
                                   "local_steps": 2, "batch_size": 2, "progress": False, "seed": 0, "threads": 1,
                                   "device": "cpu"})
        run_experiment(config, root / "faz32" / "upstream" / method / "seed0")
    return root
