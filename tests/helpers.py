"""Small helpers shared by tests (importable because pytest puts tests/ on the path)."""
def tiny_config(dataset, **overrides):
    """A run configuration small enough for a unit test (2 sites, 2 rounds, 4 steps, batch 2)."""
    from fedicra.fl.config import load_config

    base = {"dataset": str(dataset), "method": "fedavg", "sites": [0, 1], "rounds": 2, "local_steps": 4,
            "batch_size": 2, "progress": False, "seed": 0}
    base.update(overrides)
    return load_config(base=base)


REPLY_PARTS = {"arrays", "extras", "metrics", "report"}


def assert_nothing_but_model_leaves(reply, model_state, image_shape, where=""):
    """What a site sends: model entries (by name and shape) and 1-D statistics, never image-shaped data.

    `reply` is a reply RecordDict; `model_state` the site model's state_dict; `image_shape` (H, W).
    """
    from fedicra.fl import protocol

    assert set(reply) <= REPLY_PARTS, f"{where}: unexpected reply parts {sorted(set(reply) - REPLY_PARTS)}"
    for part in ("arrays", "extras"):
        for name, value in protocol.from_record(reply.get(part)).items():
            assert tuple(value.shape[-2:]) != tuple(image_shape), f"{where}: {part}[{name}] is image-shaped"
            if part == "arrays":
                assert name in model_state and value.shape == model_state[name].shape, \
                    f"{where}: arrays[{name}] is not a model entry"
            else:  # method statistics (e.g. BatchNorm moments): vectors, not maps
                assert value.dim() <= 1, f"{where}: extras[{name}] has shape {tuple(value.shape)}"


def fake_smoke_results(workdir, holdouts=()):
    """The smoke grid's training outputs, faked (run directories written through the record), with the
    data and check files the workflow expects, so a Snakemake call runs only aggregation and report.
    `holdouts`: also the leave-one-site-out runs of these sites (config leave_one_site_out: holdouts)."""
    import time
    from pathlib import Path

    from fedicra.report.fake_runs import write_fake_benchmark

    tmp_path = Path(workdir)
    results = tmp_path / "results" / "smoke"
    (results / "data" / "smoke-faz").mkdir(parents=True)
    (results / "data" / "smoke-faz" / "dataset.json").write_text("{}")
    (results / "checks").mkdir()
    (results / "checks" / "smoke-faz.txt").write_text("ok\n")
    plan = {("smoke-faz", a, m): q for a in ("rotate0", "rotate1")
            for m, q in (("fedavg", 0.6), ("fedbn", {"quality": 0.65, "global_model": False}),
                         ("local", {"quality": 0.5, "global_model": False, "holdouts": ()}), ("fedicra", 0.8),
                         ("fedicra-no_contrastive", 0.7), ("centralized_full", {"quality": 0.85, "labels": ("mask",)}))}
    for (dataset, assignment, method), spec in plan.items():
        sites = spec.get("holdouts", holdouts) if isinstance(spec, dict) else holdouts
        for name in ["seed0.yaml"] + [f"holdout{h}/seed0.yaml" for h in sites]:
            cfg = results / "configs" / dataset / assignment / method / name
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text("fake: true\n")
    time.sleep(0.05)
    write_fake_benchmark(results, plan, seeds=(0,), holdouts=holdouts, num_sites=3, cases_per_site=4, img_size=12)


def run_recorded(config, run_dir):
    """Run in-process and keep every message, so a test can inspect what left each client and what
    each reply reported. Returns (summary, transport, clients); transport.received holds the replies."""
    from fedicra.fl.backends.inprocess import InProcessTransport
    from fedicra.fl.registry import build_method
    from fedicra.fl.runner import run_experiment
    from fedicra.fl.setup import client_keys, load_manifest, make_client

    method = build_method(config)
    manifest = load_manifest(config)
    clients = {k: make_client(config, method, k, manifest) for k in client_keys(config, manifest, method)}
    for client in clients.values():
        client.samples_dir = run_dir
    transport = InProcessTransport(clients)
    transport.record = True
    summary = run_experiment(config, run_dir, transport=transport)
    return summary, transport, clients
