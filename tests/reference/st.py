"""Minimal safetensors writer/reader for the fixture generators (no `safetensors` package needed).

Format: 8-byte little-endian header length, a JSON header padded with spaces to a multiple of 8,
then the data area. Each header entry is {"dtype", "shape", "data_offsets": [begin, end]} with
offsets relative to the data area; entries tile it contiguously. "__metadata__" is string->string.
"""
import json
import struct

import numpy as np
import torch

# safetensors dtype name -> (torch dtype, element size, numpy dtype for raw bytes)
_DTYPES = {
    "F64": (torch.float64, 8, np.float64),
    "F32": (torch.float32, 4, np.float32),
    "F16": (torch.float16, 2, np.float16),
    "BF16": (torch.bfloat16, 2, np.int16),  # numpy has no bfloat16: move the raw bits
    "I64": (torch.int64, 8, np.int64),
}
_BY_TORCH = {v[0]: k for k, v in _DTYPES.items()}


def _to_bytes(t):
    t = t.detach().cpu().contiguous()
    name = _BY_TORCH.get(t.dtype)
    if name is None:
        raise ValueError(f"st.save: unsupported dtype {t.dtype}")
    if name == "BF16":
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    return name, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def save(path, tensors, metadata=None):
    """tensors: dict name -> torch.Tensor (written in sorted name order); metadata: dict str -> str."""
    header, blobs, offset = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("st.save: __metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    for name in sorted(tensors):
        dtype, data = _to_bytes(tensors[name])
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns (dict name -> torch.Tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        tdt, size, npdt = _DTYPES[e["dtype"]]
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[b:end], dtype=np.dtype(npdt).newbyteorder("<")).copy()
        t = torch.from_numpy(arr.astype(npdt))
        if e["dtype"] == "BF16":
            t = t.view(torch.int16).view(torch.bfloat16)
        out[name] = t.reshape(e["shape"])
    return out, meta
