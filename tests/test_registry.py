"""Method discovery: automatic, loud on duplicates and broken plugins, extensible from other folders."""
import subprocess
import sys
import textwrap

import pytest

from fedicra.errors import UserError
from fedicra.fl.method import Method
from fedicra.fl.registry import get_method, load_methods, register

EXPECTED = {"fedavg", "fedprox", "fedbn", "fedper", "fedrep", "fedlc", "fedala", "fedap", "metafed", "ditto",
            "local", "centralized", "centralized_full", "fedicra"}


def test_every_method_is_discovered():
    assert EXPECTED <= set(load_methods())


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(UserError, match="method 'nope' is unknown .*fedavg"):
        get_method("nope")


def test_hyperparameters_are_validated():
    fedprox = get_method("fedprox")
    assert fedprox({"mu": 1}).hp["mu"] == 1.0
    with pytest.raises(UserError, match="method_params.mu: expected float"):
        fedprox({"mu": "big"})
    with pytest.raises(UserError, match="fedprox has no parameter 'nu'"):
        fedprox({"nu": 1.0})


def test_duplicate_name_fails_loudly():
    class First(Method):
        name = "dup-test"

    class Second(Method):
        name = "dup-test"

    register(First)
    with pytest.raises(RuntimeError, match="registered twice"):
        register(Second)


def _run_with_plugin(tmp_path, source):
    (tmp_path / "plugin.py").write_text(textwrap.dedent(source))
    code = "from fedicra.fl.registry import load_methods; print(sorted(load_methods()))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "FEDICRA_METHODS_PATH": str(tmp_path)})


def test_plugin_from_another_folder_is_found(tmp_path):
    result = _run_with_plugin(tmp_path, """
        from fedicra.fl.method import Method
        from fedicra.fl.registry import register

        @register
        class Mine(Method):
            name = "my-method"
            personal = ("decoder.out_conv",)
    """)
    assert result.returncode == 0, result.stderr
    assert "'my-method'" in result.stdout


def test_broken_plugin_shows_its_real_traceback(tmp_path):
    result = _run_with_plugin(tmp_path, """
        import this_module_does_not_exist_anywhere
    """)
    assert result.returncode != 0
    assert "plugin.py" in result.stderr and "this_module_does_not_exist_anywhere" in result.stderr


def test_train_command_writes_per_case_metrics(tiny_faz, tmp_path, capsys):
    from fedicra.cli import main

    assert main(["train", "--dataset", str(tiny_faz), "--site", "0", "--steps", "4", "--eval-every", "2",
                 "--batch-size", "2", "--threads", "1", "-o", str(tmp_path / "t")]) == 0
    import pandas as pd

    cases = pd.read_csv(tmp_path / "t" / "cases.csv")
    assert set(cases["site"]) == {0} and len(cases) > 0
    assert "dice_faz" in capsys.readouterr().out
    assert main(["train", "--dataset", str(tiny_faz), "--site", "x", "-o", str(tmp_path / "u")]) == 2
