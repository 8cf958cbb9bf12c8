"""No workflow config value is ever a command: hostile values (quotes, `$(...)`, `;`, spaces,
apostrophes) in every field that reaches a rule's shell either work as plain text or fail at parse
time in one line, and nothing they spell is executed."""
import numpy as np
import pytest
import yaml

from test_workflow import REPO, fake_smoke_results, snakemake

HOSTILE = "it's $(touch PWNED) `touch PWNED` ; touch PWNED"


def _pngs(folder, names, value):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        array = np.zeros((24, 24), np.uint8)
        array[6 + i % 3:16, 6:18] = value
        Image.fromarray(array).save(folder / f"{name}.png")


def _config(tmp_path, **extra):
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config.update(extra)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _assert_nothing_ran(tmp_path):
    assert not list(tmp_path.rglob("PWNED")), "a config value was executed as a shell command"


def test_hostile_values_in_data_rules_are_plain_text(tmp_path):
    """A real run of the import, synth and check rules from a folder and results_dir full of shell syntax."""
    source = tmp_path / f"in {HOSTILE}"
    names = [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(3)]
    _pngs(source / "images", names, 200)
    _pngs(source / "masks", names, 1)
    results = f"res ults {HOSTILE}"
    config = _config(tmp_path, results_dir=results, datasets={
        "smoke-faz": {"source": "synth", "task": "faz", "size": 32, "scale": 0.02, "seed": 0},
        "imported": {"source": "import", "task": "faz", "size": 16, "seed": 0,
                     "images": str(source / "images"), "masks": str(source / "masks"),
                     "site_patterns": ["a*=site_a", f"b*{HOSTILE.replace('=', '')}=site_b", "b*=site_b"]}},
        gpus={"devices": "none", "lock_dir": str(tmp_path / f"locks {HOSTILE}")})
    targets = [f"{results}/checks/imported.txt", f"{results}/checks/smoke-faz.txt"]
    result = snakemake(tmp_path, *targets, "--cores", "1", "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_nothing_ran(tmp_path)
    assert "ok:" in (tmp_path / results / "checks" / "imported.txt").read_text()
    assert not (tmp_path / "res").exists(), "an unquoted results_dir wrote at its first word"
    dry = snakemake(tmp_path, "-n", "-p", "--configfile", config)  # the train rule's shell, printed
    assert dry.returncode == 0, dry.stderr[-3000:]
    _assert_nothing_ran(tmp_path)


@pytest.mark.slow
def test_hostile_title_and_results_dir_in_report_rules(tmp_path):
    """The report rules for real (training faked) with a title and a results_dir that are shell syntax."""
    results_dir = f"res ults {HOSTILE}"
    fake_smoke_results(tmp_path / results_dir)
    title = f"Alice's benchmark {HOSTILE}"
    config = _config(tmp_path, results_dir=results_dir, report={"title": title})
    result = snakemake(tmp_path, "--cores", "2", "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_nothing_ran(tmp_path)
    assert title in (tmp_path / "reports" / "smoke" / "report.md").read_text()


@pytest.mark.parametrize("extra, key", [
    ({"report": {"primary_assignment": "upstream; touch PWNED"}}, "report.primary_assignment"),
    ({"assignments": ["upstream", "$(touch PWNED)"]}, "assignments"),
    ({"methods": ["fedavg", "fedavg;touch PWNED"]}, "methods"),
    ({"name": "smoke'$(touch PWNED)"}, "name"),
    ({"datasets": {"x;touch PWNED": {"source": "synth", "task": "faz", "size": 32}}}, "datasets"),
    ({"train": {"device": "cpu; touch PWNED"}}, "device"),
])
def test_hostile_names_fail_at_parse_time_in_one_line(tmp_path, extra, key):
    result = snakemake(tmp_path, "-n", "--configfile", _config(tmp_path, **extra))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: config ") and key in lines[0]
    _assert_nothing_ran(tmp_path)
