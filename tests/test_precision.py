"""Mixed precision: `precision: bf16` trains with a bf16 autocast forward, losses get float32, and
the run records the resolved precision."""
import json

import pandas as pd
import pytest
import torch

from fedicra.fl.client import resolve_precision, to_fp32
from fedicra.fl.registry import build_method
from fedicra.fl.runner import run_experiment
from fedicra.fl.setup import make_client
from helpers import tiny_config


def test_auto_resolves_to_bf16_on_cuda_only():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    nested = to_fp32({"logits": torch.ones(2, dtype=torch.bfloat16), "aux": [torch.ones(1, dtype=torch.half)],
                      "index": torch.ones(1, dtype=torch.long)})
    assert nested["logits"].dtype == nested["aux"][0].dtype == torch.float32
    assert nested["index"].dtype == torch.long


@pytest.mark.parametrize("method", ["fedavg", "fedicra"])
def test_bf16_forward_gives_the_losses_float32(tiny_faz, method):
    config = tiny_config(tiny_faz, method=method, precision="bf16", device="cpu")
    algorithm = build_method(config)
    client = make_client(config, algorithm, 0)
    assert client.precision == "bf16"
    conv = next(m for m in client.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}
    conv.register_forward_hook(lambda module, args, out: seen.update(conv=out.dtype))

    def loss_fn(batch, output):
        floats = [output["logits"], *output.get("aux", [])]
        seen["loss_inputs"] = {t.dtype for t in floats}
        return algorithm.loss(client, batch, output)

    before = {k: v.clone() for k, v in client.model.state_dict().items()}
    totals = client.train_steps(client.model, 2, loss_fn=loss_fn)
    assert seen["conv"] == torch.bfloat16                 # the forward ran under autocast
    assert seen["loss_inputs"] == {torch.float32}         # the losses did not
    assert torch.isfinite(torch.tensor(totals["loss"]))
    moved = [k for k, v in client.model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved, "bf16 training did not change the model"
    assert all(p.dtype == torch.float32 for p in client.model.parameters())  # master weights stay fp32


def test_bf16_run_trains_and_records_its_precision(tiny_faz, tmp_path):
    config = tiny_config(tiny_faz, precision="bf16", device="cpu")
    run_experiment(config, tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert summary["protocol"]["precision"] == "bf16"
    cases = pd.read_csv(tmp_path / "bf16" / "cases.csv")
    assert len(cases) and cases["mean_dice"].notna().all()
    # `auto` on a CPU machine is recorded as what it resolved to
    run_experiment(tiny_config(tiny_faz, rounds=1, device="cpu"), tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["precision"] == "fp32"
