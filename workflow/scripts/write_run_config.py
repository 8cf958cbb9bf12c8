"""Snakemake script: write one run's YAML config (the `run_config` params) atomically."""
import os
import tempfile
from pathlib import Path

import yaml

out = Path(snakemake.output[0])  # noqa: F821 (injected by Snakemake)
out.parent.mkdir(parents=True, exist_ok=True)
fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
with os.fdopen(fd, "w") as handle:
    yaml.safe_dump(dict(snakemake.params.run), handle, sort_keys=False)  # noqa: F821
os.replace(tmp, out)
