"""The built-in methods ship in the wheel and are found after a plain (non-editable) install."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a clean copy of the tracked source files (no stale build/ folder)."""
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(out)], check=True, capture_output=True, text=True)
    return next(out.glob("fedicra-*.whl"))


def test_wheel_contains_every_builtin_method_and_package(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "methods").glob("*.py"):
        assert f"fedicra_methods/{path.name}" in names, f"{path.name} is not in the wheel"
    for init in (ROOT / "fedicra").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"package {init.parent} is not in the wheel"


def test_installed_wheel_lists_the_methods_with_their_hyperparameters(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True)
    # The installed copy comes first on the path; run from a folder that is not the checkout.
    env = {**os.environ, "PYTHONPATH": str(target), "FEDICRA_METHODS_PATH": ""}
    where = subprocess.run([sys.executable, "-c", "import fedicra.fl.registry as r; print(r.builtin_methods_dir())"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == target / "fedicra_methods"
    listing = subprocess.run([sys.executable, "-m", "fedicra", "methods"], capture_output=True, text=True,
                             cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    for path in (ROOT / "methods").glob("[!_]*.py"):
        assert f"\n{path.stem}:" in "\n" + listing.stdout
    assert "centralized_full:" in listing.stdout
    assert "    mu: float in [0, inf) = 0.001  weight of the proximal term" in listing.stdout
