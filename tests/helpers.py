"""Small helpers shared by tests (importable because pytest puts tests/ on the path)."""
def tiny_config(dataset, **overrides):
    """A run configuration small enough for a unit test (2 sites, 2 rounds, 4 steps, batch 2)."""
    from fedicra.fl.config import load_config

    base = {"dataset": str(dataset), "method": "fedavg", "sites": [0, 1], "rounds": 2, "local_steps": 4,
            "batch_size": 2, "progress": False, "seed": 0}
    base.update(overrides)
    return load_config(base=base)
