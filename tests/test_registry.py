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


@pytest.mark.parametrize("value,message", [(float("nan"), "finite"), (float("inf"), "finite"),
                                           (-1.0, r"must be in \[0, inf\)"), (True, "expected float")])
def test_bad_hyperparameter_values_are_rejected_naming_the_key(value, message):
    with pytest.raises(UserError, match=f"^method_params.mu: .*{message}"):
        get_method("fedprox")({"mu": value})


def test_range_and_choices_are_checked_by_shared_code():
    with pytest.raises(UserError, match=r"method_params.momentum: must be in \[0, 1\]"):
        get_method("fedap")({"momentum": 1.5})
    with pytest.raises(UserError, match="method_params.tree_mode: expected one of recursive, add, single"):
        get_method("fedicra")({"tree_mode": "bogus"})
    with pytest.raises(UserError, match=r"method_params.window: must be in \[1, inf\)"):
        get_method("fedala")({"window": 0})


def test_plain_default_hyperparameters_still_work():
    class Plain(Method):
        name = "plain-defaults"
        hyperparameters = {"k": 3}

    assert Plain({"k": 5}).hp == {"k": 5}
    with pytest.raises(UserError, match="method_params.k: expected int"):
        Plain({"k": 0.5})


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


def test_duplicate_module_file_name_fails_loudly(tmp_path):
    """A user file named like a built-in would be silently shadowed or skipped; it must fail instead."""
    result = _run_with_plugin(tmp_path, """
        from fedicra.fl.method import Method
        from fedicra.fl.registry import register

        @register
        class Other(Method):
            name = "other-name"
    """)
    assert result.returncode == 0, result.stderr
    (tmp_path / "plugin.py").rename(tmp_path / "fedavg.py")
    code = "from fedicra.fl.registry import load_methods; load_methods()"
    clash = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "FEDICRA_METHODS_PATH": str(tmp_path)})
    assert clash.returncode != 0
    assert "two method files are named 'fedavg.py'" in clash.stderr


def test_no_plugin_imports_another_plugin():
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[1] / "methods").glob("*.py"):
        lines = path.read_text().splitlines()
        assert not [l for l in lines if l.startswith(("from fedicra_methods", "import fedicra_methods"))], path
        assert not [l for l in lines if "sys.modules" in l or "get_method(" in l], path


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
