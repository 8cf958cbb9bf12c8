"""Snakemake script: read every run of the grid (the summary.json inputs) into the tidy tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (the checkout's fedicra, also under --use-conda)
from fedicra.report.collect import collect, save  # noqa: E402

with open(snakemake.log[0], "w") as log:  # noqa: F821 (injected by Snakemake)
    sys.stderr = log
    run_dirs = [Path(p).parent for p in snakemake.input.summaries]  # noqa: F821
    collected = collect(run_dirs)
    paths = save(collected, Path(snakemake.output.cases).parent)  # noqa: F821
    print(f"collected {len(collected.runs)} runs, {len(collected.cases)} case rows -> {paths}", file=log)
