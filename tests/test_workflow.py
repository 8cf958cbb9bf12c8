"""The Snakemake workflow: lint, dry runs of every config and profile, and the aggregation part run for real.

Snakemake runs as a subprocess with `--directory` in a temporary folder and a private cache, so
nothing is written into the repository.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import fake_smoke_results

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
FAZ_MINI = REPO.parent / "shared" / "data" / "faz-octa-mini"


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_CACHE_HOME=str(workdir / ".cache"), MPLBACKEND="Agg",
               MPLCONFIGDIR=str(workdir / ".mpl"), PYTHONPATH=str(REPO))
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def upstream_folders(workdir: Path, sites: int = 5) -> None:
    for name in ("FAZ_h5", "ODOC_h5"):
        for k in range(1, sites + 1):
            (workdir / "data" / name / f"Domain{k}" / "train").mkdir(parents=True)


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config/smoke.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Lints for" not in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]


def test_smoke_dry_run(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/smoke.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    # 1 dataset x 2 assignments x (5 methods + 1 FedICRA ablation) x 1 seed
    assert counts["train"] == 12 and counts["synth_dataset"] == 1 and counts["figures_dataset"] == 2
    assert counts["report_markdown"] == 1 and "import_dataset" not in counts


def test_paper_dry_run_with_slurm_profile(tmp_path):
    upstream_folders(tmp_path)
    # With the default config present too, a named --configfile must replace it, not merge into it.
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/default.yaml", tmp_path / "config/default.yaml")
    start = time.monotonic()
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config/paper.yaml"))
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    # 2 datasets x 1 assignment x (14 methods + 5 FedICRA ablations) x 5 seeds
    assert counts["train"] == 190 and counts["check_dataset"] == 2 and "synth_dataset" not in counts
    # leave-one-site-out: 2 datasets x 5 held-out sites x (19 - local - metafed) method keys x 5 seeds
    assert counts["train_holdout"] == 2 * 5 * 17 * 5
    assert "--gpus auto --runs-per-gpu 2" in result.stdout
    assert "fedicra-no_contrastive/seed4" in result.stdout
    print(f"paper dry run: {seconds:.1f} s, {counts['total']} jobs")
    slurm = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/paper.yaml"),
                      "--profile", str(REPO / "workflow/profiles/slurm"))
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert "slurm_partition=gpu" in slurm.stdout and "gpu=1" in slurm.stdout


def test_paper_without_data_fails_with_one_line(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/paper.yaml"))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "config datasets.faz: folder" in out and "does not exist" in out


def test_default_config_includes_faz_mini_and_skips_a_missing_optional_dataset(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/default.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert counts["import_dataset"] == 1 and counts["train"] == 2 * 15  # synth-faz, faz-mini (shipped or full copy) x 14 + 1 variant
    missing = tmp_path / "other.yaml"
    missing.write_text("datasets:\n  faz-other:\n    source: import\n    task: faz\n    images: /nonexistent/images\n"
                       "    masks: /nonexistent/masks\n    site_patterns: ['deep_*=deep']\n    size: 64\n"
                       "    optional: true\n")
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/default.yaml"), str(missing))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipping optional dataset faz-other" in result.stdout + result.stderr
    assert job_counts(result.stdout)["train"] == 2 * 15


def test_config_schema_fills_defaults_and_rejects_bad_values():
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(REPO / "workflow/schemas/config.schema.yaml")
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    del config["variants"]
    validate(config, schema)
    assert config["reports_dir"] == "reports" and config["report"]["selection"] == "best_val"
    assert config["gpus"]["runs_per_gpu"] == 1 and config["variants"] == {}
    for key, value in (("seeds", [-1]), ("methods", []), ("name", "a b")):
        bad = {**yaml.safe_load((REPO / "config/smoke.yaml").read_text()), key: value}
        with pytest.raises(WorkflowError):
            validate(bad, schema)


@pytest.mark.slow
def test_aggregation_and_html_report_run_for_real(tmp_path):
    """Training outputs are faked (contract-conforming run directories); everything after them runs."""
    fake_smoke_results(tmp_path)
    config = str(REPO / "config/smoke.yaml")
    result = snakemake(tmp_path, "--cores", "2", "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule train:" not in result.stderr and "rule synth_dataset:" not in result.stderr
    report = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    assert "## Evaluation protocol" in report and "smoke-faz" in report
    assert (tmp_path / "reports" / "smoke" / "figures" / "smoke-faz_qualitative.pdf").is_file()
    from fedicra.report.build import expected_outputs   # the rules declare what the report code writes
    expected = expected_outputs(["smoke-faz"], ["rotate0", "rotate1"])
    missing = [rel for rel in expected["tables"] + expected["figures"]
               if not (tmp_path / "reports" / "smoke" / rel).is_file()]
    assert not missing, missing
    html = tmp_path / "report.html"
    result = snakemake(tmp_path, "--report", str(html), "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text(errors="replace")
    assert "smoke-faz" in text and "best_val" in text


@pytest.mark.slow
def test_smoke_workflow_runs_end_to_end(tmp_path):
    """The whole smoke grid for real: data, training runs, aggregation, figures and report; then a no-op."""
    config = str(REPO / "config/smoke.yaml")
    result = snakemake(tmp_path, "--cores", "2", "--configfile", config, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    for method in ("fedavg", "fedbn", "local", "fedicra", "fedicra-no_contrastive", "centralized_full"):
        assert method in report
    runs = list((tmp_path / "results").rglob("summary.json"))
    assert len(runs) == 12
    assert "## Fairness across sites" in report and "## Label efficiency" in report
    assert "![Dice by annotation type]" in report   # the rotations separate site and label kind
    check = subprocess.run([sys.executable, "-m", "fedicra", "report", "check", str(tmp_path / "results")],
                           capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0 and check.stdout.count("ok ") == 12, check.stderr
    again = snakemake(tmp_path, "--cores", "2", "--configfile", config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_train_blocks_take_every_run_option_and_are_checked_against_the_run_schema(tmp_path):
    """`train:` is the run schema (no whitelist, no second defaults); methods are checked at parse time."""
    from fedicra.errors import UserError
    from fedicra.workflow_config import workflow_errors

    config = {"datasets": {"d": {"source": "synth", "task": "faz", "size": 32}}, "methods": ["fedprox"]}
    ok = {"select_on_test": True, "gated_crf": 0.1, "lr": 1e-3, "threads": 1}
    workflow_errors(config, {"d": ok}, {"fedprox": ("fedprox", {"mu": 0.01})})
    bad = [({"d": {"lr": float("nan")}}, {}, "datasets.d.train: option lr: must be a finite number"),
           ({"d": {"rounds": 0}}, {}, "datasets.d.train: option rounds"),
           ({"d": {"dataset": "x"}}, {}, "'dataset' was unexpected"),
           ({"d": {}}, {"nosuch": ("nosuch", {})}, "methods: nosuch: method 'nosuch' is unknown"),
           ({"d": {}}, {"fedprox": ("fedprox", {"mu2": 1.0})}, "has no parameter 'mu2'")]
    for trains, methods, message in bad:
        with pytest.raises(UserError, match=re.escape(message)):
            workflow_errors(config, trains, methods)
    with pytest.raises(UserError, match="assignments: 'sideways' is not an annotation assignment"):
        workflow_errors({**config, "assignments": ["sideways"]}, {}, {})
    # scientific notation (a string to Snakemake's YAML 1.1 reader) is a number, as in `fedicra run`
    extra = tmp_path / "sci.yaml"
    extra.write_text("train: {lr: 1e-3, select_on_test: true}\nvariants: {fedicra-x: {method: fedicra, "
                     "method_params: {nosuch: 1}}}\n")
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/smoke.yaml"), str(extra))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "variants.fedicra-x" in lines[0], lines
    extra.write_text("train: {lr: 1e-3, select_on_test: true}\n")
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/smoke.yaml"), str(extra))
    assert result.returncode == 0, result.stderr[-2000:]


def test_leave_one_site_out_adds_holdout_runs_and_keeps_regular_paths(tmp_path):
    loso = tmp_path / "loso.yaml"
    loso.write_text("leave_one_site_out: true\n")
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config/smoke.yaml"), str(loso))
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    # regular runs unchanged; 2 assignments x 5 held-out sites x 5 methods that serve a new site (not local)
    assert counts["train"] == 12 and counts["train_holdout"] == 50
    assert "rotate1/fedicra-no_contrastive/holdout4/seed0/summary.json" in result.stdout
    assert "local/holdout" not in result.stdout and "smoke-faz/rotate0/fedavg/seed0/summary.json" in result.stdout
    loso.write_text("leave_one_site_out: [7]\n")
    bad = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/smoke.yaml"), str(loso))
    assert bad.returncode == 2 and "config leave_one_site_out: site 7 does not exist" in bad.stderr


@pytest.mark.slow
def test_generalization_table_from_leave_one_site_out_runs(tmp_path):
    """Faked LOSO runs through the whole aggregation: the report gets a generalization table."""
    fake_smoke_results(tmp_path, holdouts=(0, 1))
    loso = tmp_path / "loso.yaml"
    loso.write_text("leave_one_site_out: [0, 1]\n")
    result = snakemake(tmp_path, "--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"), str(loso))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule train_holdout:" not in result.stderr
    report = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    section = report[report.index("## Unseen-site generalization"):report.index("## Convergence")]
    assert "| smoke-faz | rotate0 | fedavg | global |" in section and "| fedbn | best available |" in section
    assert "| local |" not in section and "fedbn | global" not in section
    assert (tmp_path / "reports" / "smoke" / "tables" / "generalization.tex").read_text().count(r"\\") > 10
