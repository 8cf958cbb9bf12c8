"""The message codec: byte-identical to Flower's own Array format both ways, faster, with a fallback."""
import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedicra.fl.protocol import decode_array, from_record, to_record
from fedicra.models import build_model


def _state():
    state = build_model("unet", 1, 2, num_sites=3, site=0, faithful=False).state_dict()
    return {**state, "scalar": torch.tensor(3.5), "ints": torch.arange(6).reshape(2, 3),
            "strided": torch.arange(12.0).reshape(3, 4).t(), "numpy": np.ones((2, 2), dtype=np.float64)}


def test_encoded_arrays_are_flowers_bytes():
    state = _state()
    ours, flowers = to_record(state), ArrayRecord({k: torch.as_tensor(v) for k, v in state.items()})
    assert list(ours) == list(flowers)
    for key in ours:
        a, b = ours[key], flowers[key]
        assert (a.dtype, a.shape, a.stype, a.data) == (b.dtype, b.shape, b.stype, b.data), key


def test_decoded_tensors_equal_flowers_and_are_writable():
    state = _state()
    decoded = from_record(ArrayRecord({k: torch.as_tensor(v) for k, v in state.items()}))
    for key, value in state.items():
        expected = torch.as_tensor(value)
        assert decoded[key].dtype == expected.dtype and decoded[key].shape == expected.shape, key
        assert torch.equal(decoded[key], expected), key
    decoded["scalar"] += 1.0   # a writable copy, not a view of the message
    assert float(decoded["scalar"]) == 4.5


def test_other_layouts_fall_back_to_flowers_parser():
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    array = Array.from_numpy_ndarray(fortran)
    assert b"'fortran_order': True" in array.data
    assert torch.equal(decode_array(array), torch.from_numpy(np.ascontiguousarray(fortran)))
