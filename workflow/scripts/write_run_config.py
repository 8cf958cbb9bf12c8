"""Snakemake script: write one run's YAML config (the `run_config` params) atomically."""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (the checkout's fedicra, also under --use-conda)
from fedicra.atomic import atomic_write  # noqa: E402

atomic_write(snakemake.output[0], yaml.safe_dump(dict(snakemake.params.run), sort_keys=False))  # noqa: F821
