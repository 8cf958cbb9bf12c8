"""Small helpers shared by tests (importable because pytest puts tests/ on the path)."""
def tiny_config(dataset, **overrides):
    """A run configuration small enough for a unit test (2 sites, 2 rounds, 4 steps, batch 2)."""
    from fedicra.fl.config import load_config

    base = {"dataset": str(dataset), "method": "fedavg", "sites": [0, 1], "rounds": 2, "local_steps": 4,
            "batch_size": 2, "progress": False, "seed": 0}
    base.update(overrides)
    return load_config(base=base)


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
    transport = InProcessTransport(clients)
    transport.record = True
    summary = run_experiment(config, run_dir, transport=transport)
    return summary, transport, clients
