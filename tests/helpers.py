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
