"""Figures, report.md and the `report` CLI on fake run directories."""
import numpy as np
import pytest

from fedicra import record
from fedicra.report import build, collect
from fedicra.report.__main__ import main as report_main
from fedicra.report.fake_runs import assignment_labels, write_fake_benchmark


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    plan = {}
    for ds, a in (("synth-faz", "upstream"), ("synth-faz", "scribble"), ("synth-odoc", "upstream")):
        for m, q in (("fedavg", 0.6), ("local", 0.5), ("fedicra", 0.8)):
            plan[(ds, a, m)] = q
    write_fake_benchmark(root, plan, seeds=(0, 1), num_sites=2, cases_per_site=4, img_size=12)
    return root / "runs"


def test_cli_all_writes_tables_figures_and_report(runs_root, tmp_path):
    out = tmp_path / "rep"
    assert report_main(["all", str(runs_root), "--out", str(out), "--name", "unit",
                        "--methods", "local,fedavg,fedicra"]) == 0
    expected = build.expected_outputs(["synth-faz"], ["upstream", "scribble"])
    odoc = build.expected_outputs(["synth-odoc"], ["upstream"])
    expected = {k: expected[k] + odoc[k] for k in expected}
    for rel in expected["tables"] + expected["figures"]:
        path = out / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    assert (out / "figures" / "cd_diagram.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "cd_diagram.pdf").read_bytes()[:4] == b"%PDF"
    report = (out / "report.md").read_text()
    assert "## Evaluation protocol" in report
    assert "**personalized** model" in report and "`best_val`" in report and "**intended** mode" in report
    assert "![per-site Dice, synth-faz](figures/synth-faz__upstream_per_site_dice.png)" in report
    assert "| synth-faz | scribble | Domain1 (scribble), Domain2 (scribble) | 4, 4 |" in report
    assert "`torch`: 2.13.0" in report
    # the protocol section states every method's resolved values, as each run recorded them
    resolved = record.read_config(next((runs_root / "synth-faz" / "upstream" / "fedicra").glob("seed*")))["resolved"]
    block = report[report.index("Resolved values"):report.index("## Results")]   # not the package versions' `fedicra` line
    line = next(line for line in block.splitlines() if line.startswith("- `fedicra`: "))
    assert f"`skip_iters` {resolved['method_params']['skip_iters']}" in line
    assert f"`gradient_steps_per_site` {resolved['gradient_steps_per_site']}" in line
    assert f"`objective` {resolved['objective']}" in line
    # the method order given on the command line is the table row order
    table = (out / "tables" / "synth-faz__upstream.md").read_text()
    assert table.index("| local |") < table.index("| fedavg |") < table.index("| fedicra |")


def test_cli_steps_and_protocol_flags(runs_root, tmp_path, capsys):
    assert report_main(["collect", str(runs_root), "--out", str(tmp_path)]) == 0
    assert report_main(["tables", "--results", str(tmp_path), "--out", str(tmp_path / "t"),
                        "--model", "global", "--selection", "last"]) == 0
    assert report_main(["figures", "--kind", "qualitative", "--dataset", "synth-odoc",
                        "--results", str(tmp_path), "--out", str(tmp_path / "f")]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["synth-odoc_qualitative.pdf",
                                                                  "synth-odoc_qualitative.png"]
    col = collect.load(tmp_path)
    (tmp_path / "f2").mkdir()
    build.combo_figures(col, build.ReportOptions(model="global", selection="last"), "synth-faz", "scribble",
                        tmp_path / "f2")
    assert len(list((tmp_path / "f2").glob("*.pdf"))) == len(build.COMBO_FIGURES)
    assert report_main(["render", "--results", str(tmp_path), "--out", str(tmp_path / "r.md"),
                        "--tables", str(tmp_path / "t"), "--figures", str(tmp_path / "f"),
                        "--model", "global", "--selection", "last"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "**global** (server-aggregated) model" in text and "**last** round" in text
    capsys.readouterr()
    assert report_main(["figures", "--kind", "combo", "--results", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "needs --dataset" in capsys.readouterr().err
    assert report_main(["tables", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2


def test_samples_are_read_per_site_in_numeric_order(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    for site in (10, 2):
        record.write_site_samples(tmp_path, site, {"image": np.ones((8, 8), np.float32), "mask": mask,
                                                   "train_image": np.ones((8, 8), np.float32),
                                                   "train_label": mask + 2, "prediction": mask})
    entries = record.read_samples(tmp_path)
    assert [e["site"] for e in entries] == [2, 10]
    assert entries[0]["prediction"].shape == (8, 8) and (entries[0]["label"] == 2).all()
    with pytest.raises(record.RecordError, match="missing train_label"):
        record.write_site_samples(tmp_path, 0, {"image": mask, "mask": mask, "train_image": mask, "prediction": mask})


def test_report_on_real_tiny_runs(real_runs, tmp_path):
    """The whole report from real engine output (not fakes): tables, fairness, qualitative from samples."""
    out = tmp_path / "rep"
    assert report_main(["all", str(real_runs), "--out", str(out), "--methods", "fedavg,local"]) == 0
    for rel in build.expected_outputs(["faz32"], ["upstream"])["tables"] + \
            build.expected_outputs(["faz32"], ["upstream"])["figures"]:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    fairness = (out / "tables" / "fairness.md").read_text()
    assert "| faz32 | upstream | fedavg |" in fairness and "| faz32 | upstream | local |" in fairness
    report = (out / "report.md").read_text()
    assert "one seed (no spread over seeds: std not shown)" in report and "over 1 seed" not in report
    assert "- device used: cpu (requested: cpu)" in report and "- precision: fp32" in report
    assert "Not drawn: in this grid site and label kind are not crossed" in report
    # training settings come from the run schema: departures one per line, the rest named once
    assert "- `rounds`: 2" in report and "- `sites`: [0, 1]" in report and "- `local_steps`: 2" in report
    defaults = next(line for line in report.splitlines() if line.startswith("- at the run schema's defaults:"))
    assert "`select_on_test`" in defaults and "`gated_crf`" in defaults and "`rounds`" not in defaults
    numbers = __import__("pandas").read_csv(out / "tables" / "numbers.csv")
    assert {"results", "fairness", "runs"} <= set(numbers["section"])


def test_setup_names_the_assigned_label_kinds_when_the_full_mask_bound_comes_first(tmp_path):
    """`centralized_full` trains on full masks whatever the assignment and sorts before the federated
    methods; the setup table still names each site's assigned weak label and says who trained on masks."""
    plan = {("synth-faz", "upstream", "centralized_full"): {"quality": 0.9, "labels": ("mask", "mask")},
            ("synth-faz", "upstream", "fedavg"): 0.6}
    write_fake_benchmark(tmp_path, plan, seeds=(0,), num_sites=2, cases_per_site=4, img_size=12)
    out = tmp_path / "rep"
    assert report_main(["all", str(tmp_path / "runs"), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    weak = assignment_labels("upstream", 2)
    assert weak != ("mask", "mask")
    assert f"| synth-faz | upstream | Domain1 ({weak[0]}), Domain2 ({weak[1]}) | 4, 4 |" in report
    assert "`centralized_full` trained on full masks at every site" in report
