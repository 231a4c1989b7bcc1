"""Reader and writer of the safetensors format, by hand (no safetensors
package on Debian 12): an 8-byte little-endian header length N, a JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}, then the tensors' little-endian bytes,
contiguous in offset order. The writer pads the header with spaces so the
data section starts at a multiple of 64 bytes, like the C++ writer
(common/format/safetensors_writer.cc), which keeps mmap-ed tensors aligned.
"""
import hashlib
import json
import os
import struct

import numpy as np

ALIGNMENT = 64
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"),
          "U8": np.dtype("u1"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8")}
_NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


def _dtype_name(array):
    name = _NAMES.get(array.dtype.newbyteorder("<").str)
    if name is None:
        raise ValueError(f"dtype {array.dtype} has no safetensors name "
                         f"(supported: {', '.join(DTYPES)})")
    return name


def encode(tensors, metadata=None):
    """The file's bytes for `tensors`, a list of (name, numpy array) written
    in that order; `metadata` maps str to str."""
    header = {}
    offset = 0
    blobs = []
    for name, array in tensors:
        if name in header or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} repeated or reserved")
        dtype = _dtype_name(array)
        data = np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(path, tensors, metadata=None):
    """Writes the file atomically (temporary file, fsync, rename); returns
    (sha256 lowercase hex, size in bytes) of what was written."""
    data = encode(tensors, metadata)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest(), len(data)


def decode(data):
    """(dict name -> numpy array, metadata dict) from a file's bytes.
    Raises ValueError when the bytes are not a consistent safetensors file
    (offsets out of range, overlapping or with gaps, shape/dtype mismatch)."""
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, a safetensors file has at "
                         f"least the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"header length {n} exceeds the file ({len(data)})")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors = {}
    end = 0
    for name, info in sorted(header.items(),
                             key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if b != end or e - b != count * dtype.itemsize or e > len(body):
            raise ValueError(f"tensor {name}: data_offsets [{b}, {e}] do not "
                             f"follow {end} with {count} x {info['dtype']}")
        end = e
        tensors[name] = np.frombuffer(body[b:e], dtype=dtype).reshape(
            info["shape"])
    if end != len(body):
        raise ValueError(f"{len(body) - end} bytes after the last tensor")
    return tensors, metadata


def read(path):
    with open(path, "rb") as f:
        return decode(f.read())
