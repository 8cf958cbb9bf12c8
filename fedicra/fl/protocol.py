"""The messages between server and clients, as Flower records.

Every backend (in-process, Flower simulation, Flower deployment) sends exactly these records, so
what leaves a client can be inspected and counted the same way everywhere.

Request (server -> client), message type "train":
    "arrays":  ArrayRecord  what the server sends this site (global or personalized model, ...)
    "config":  ConfigRecord round, local_steps, evaluate (bool), final (bool)
Reply (client -> server):
    "arrays":  ArrayRecord  the client's upload (never contains personal entries)
    "extras":  ArrayRecord  statistics for the server (e.g. BatchNorm moments), not parameters
    "metrics": MetricRecord training loss terms, num_batches, num_cases, seconds
    "report":  ConfigRecord JSON text of validation rows / final per-case scores
Nothing else leaves a site: in the final round each site writes its qualitative sample itself
(`fedicra.record.write_site_samples` into `client.samples_dir`), it is never part of a reply.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedicra import record
from fedicra.fl.client import Client


def to_record(arrays: dict[str, Any]) -> ArrayRecord:
    if not arrays:
        return ArrayRecord()
    values = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
              for k, v in arrays.items()}
    return ArrayRecord(values)


def from_record(record: ArrayRecord | None) -> dict[str, torch.Tensor]:
    if record is None or not len(record):
        return {}
    return dict(record.to_torch_state_dict())


def count_bytes(arrays: dict[str, torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in arrays.values()))


def request_from_record(arrays: ArrayRecord, config: dict[str, Any]) -> RecordDict:
    return RecordDict({"arrays": arrays, "config": ConfigRecord(config)})


def handle(client: Client, content: RecordDict) -> RecordDict:
    """Client side of one round: merge -> (validate) -> train -> upload, or the final evaluation."""
    started = time.perf_counter()
    config = dict(content["config"])
    method = client.method
    received = from_record(content.get("arrays"))
    method.receive(client, received)
    reply = RecordDict()
    report: dict[str, Any] = {}
    if config.get("evaluate"):
        # The model merged at the start of round r has been trained for r - 1 rounds.
        report["validation"] = client.validate(int(config["round"]) - 1)
    if config.get("final"):
        global_model = None
        if method.global_model_available() and received:
            import copy

            global_model = copy.deepcopy(client.model)
            global_model.load_state_dict({**global_model.state_dict(), **received})
        report["cases"] = client.final_scores(global_model)
        if client.samples_dir is not None:
            for site, arrays in client.sample_prediction().items():
                record.write_site_samples(client.samples_dir, site, arrays)
        metrics: dict[str, float] = {}
    else:
        metrics = method.train_round(client, config)
        reply["arrays"] = to_record(method.upload(client))
        reply["extras"] = to_record(method.client_extras(client))
    metrics.update(num_batches=float(client.batches_per_epoch), num_cases=float(client.train_cases),
                   gradient_steps=float(client.gradient_steps),
                   seconds=time.perf_counter() - started)
    reply["metrics"] = MetricRecord({k: float(v) for k, v in metrics.items()})
    reply["report"] = ConfigRecord({"json": json.dumps(report, default=float)})
    return reply
