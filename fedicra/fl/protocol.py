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

import io
import json
import time
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.constant import SType

from fedicra import record
from fedicra.fl.client import Client


# The arrays travel as Flower `Array`s in Flower's own format (stype numpy.ndarray: the bytes of
# `np.save`). Flower's codec runs numpy's header writer and parser for every tensor, which costs a
# model of ~140 tensors about 8 ms per message each way (~6 % of a 64 px round). The header of a
# (dtype, shape) never changes, so it is made once with numpy's own writer and reused: the bytes
# are identical to Flower's (tests/test_protocol_codec.py), and anything else falls back to Flower.
_NPY_HEADERS: dict[tuple[str, tuple[int, ...]], bytes] = {}


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    key = (dtype.str, shape)
    header = _NPY_HEADERS.get(key)
    if header is None:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
        header = _NPY_HEADERS[key] = buffer.getvalue()
    return header


def encode_array(value: Any) -> Array:
    """One tensor or array as a Flower Array, byte-identical to `Array.from_numpy_ndarray`."""
    tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    array = tensor.numpy()
    if array.dtype.hasobject or not array.flags.c_contiguous:
        return Array.from_numpy_ndarray(array)   # Flower's own path (Fortran order; objects it refuses)
    return Array(dtype=str(array.dtype), shape=tuple(array.shape), stype=SType.NUMPY,
                 data=b"".join([_npy_header(array.dtype, array.shape), memoryview(array).cast("B")]))


def decode_array(array: Array) -> torch.Tensor:
    """A Flower Array as a writable tensor; equal to `torch.from_numpy(array.numpy())`."""
    if array.stype == SType.NUMPY:
        dtype, shape = np.dtype(array.dtype), tuple(array.shape)
        if not dtype.hasobject:
            header = _npy_header(dtype, shape)
            if array.data.startswith(header) and len(array.data) == len(header) + dtype.itemsize * int(np.prod(shape)):
                flat = np.frombuffer(array.data, dtype=dtype, offset=len(header)).copy()
                return torch.from_numpy(flat.reshape(shape))
    return torch.from_numpy(array.numpy())       # any other layout: Flower's own parser


def to_record(arrays: dict[str, Any]) -> ArrayRecord:
    record = ArrayRecord()
    for k, v in arrays.items():
        record[k] = encode_array(v)
    return record


def from_record(record: ArrayRecord | None) -> dict[str, torch.Tensor]:
    if record is None or not len(record):
        return {}
    return {k: decode_array(v) for k, v in record.items()}


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
