"""Tensors between numpy, ``TensorProto`` and the REST API's JSON.

Follows the real server's wire habits: responses carry values in the typed
repeated fields (``float_val``, ...) rather than ``tensor_content``, and the
REST API writes float32 values with the shortest text that reads back to the
same float32 (``0.1``, not ``0.10000000149011612``), ``NaN``/``Infinity`` for
non-finite values, and ``{"b64": ...}`` for string outputs whose name ends in
``_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.framework.tensor_pb2 import TensorProto

from .errors import ServingError, invalid_argument

DATA_TYPE_NAMES: dict[int, str] = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_UINT16: "uint16",
}


def dtype_name(dtype: int) -> str:
    """TensorFlow's short name of a ``DataType`` enum value (``float``, ``int64``...)."""
    return DATA_TYPE_NAMES.get(dtype, types_pb2.DataType.Name(dtype) if dtype else "invalid")


def tensor_proto_to_ndarray(proto: TensorProto, name: str = "") -> np.ndarray:
    """Decode a request tensor; a malformed one is an INVALID_ARGUMENT."""
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # TensorFlow raises several types for bad protos
        raise invalid_argument(f"Cannot parse input tensor {name}: {e}") from None


def ndarray_to_tensor_proto(array: np.ndarray) -> TensorProto:
    """Encode an output tensor with the typed value fields, as the real server does."""
    array = np.asarray(array)
    proto = TensorProto()
    if array.dtype.kind in ("O", "S", "U"):
        proto.dtype = types_pb2.DT_STRING
    else:
        proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    flat = array.ravel()
    dtype = proto.dtype
    if dtype == types_pb2.DT_FLOAT:
        proto.float_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(flat.tolist())
    elif dtype in (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_UINT16,
    ):
        proto.int_val.extend(int(v) for v in flat.tolist())
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(bool(v) for v in flat.tolist())
    elif dtype == types_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif dtype == types_pb2.DT_UINT32:
        proto.uint32_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_UINT64:
        proto.uint64_val.extend(flat.tolist())
    else:
        return tf.make_tensor_proto(array)
    return proto


# ----------------------------------------------------------------------------
# JSON (REST API)


class RawJson(str):
    """A JSON token written as is (numbers formatted the real server's way)."""


def format_float(value: float, single: bool) -> RawJson:
    """A float as JSON: shortest round-trip text, ``.0`` on whole numbers."""
    if math.isnan(value):
        return RawJson("NaN")
    if math.isinf(value):
        return RawJson("Infinity" if value > 0 else "-Infinity")
    text = str(np.float32(value)) if single else repr(float(value))
    if "." not in text and "e" not in text:
        text += ".0"
    return RawJson(text)


def dumps(value: Any) -> str:
    """Serialize to JSON, writing ``RawJson`` tokens verbatim."""
    if isinstance(value, RawJson):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value, single=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def ndarray_to_json(array: np.ndarray, as_bytes: bool = False) -> Any:
    """A tensor (or one row of it) as nested JSON-ready lists."""
    array = np.asarray(array)
    kind = array.dtype.kind
    single = array.dtype in (np.float32, np.float16)

    def leaf(v: Any) -> Any:
        if kind == "f":
            return format_float(float(v), single)
        if kind == "b":
            return bool(v)
        if kind in ("i", "u"):
            return int(v)
        raw = v if isinstance(v, bytes) else str(v).encode()
        if as_bytes:
            return {"b64": base64.b64encode(raw).decode("ascii")}
        return raw.decode("utf-8", errors="replace")

    def walk(v: Any) -> Any:
        return [walk(x) for x in v] if isinstance(v, list) else leaf(v)

    if kind in ("O", "S", "U"):
        nested: Any = array.tolist() if array.ndim else array.item()
    else:
        nested = array.tolist()
    return walk(nested)


def json_type_name(value: Any) -> str:
    """The JSON type of a parsed value, named as the real server's errors name it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def json_text(value: Any) -> str:
    """Compact JSON of a parsed value, for error messages."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def is_b64_object(value: Any) -> bool:
    """``{"b64": "..."}`` and nothing else: the REST encoding of binary strings."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64_object(value: Any) -> bytes:
    """The bytes of a ``{"b64": ...}`` object; INVALID_ARGUMENT if malformed."""
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {json_text(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


_FLOAT32_MAX_INT = (1 << 24) - 1
_FLOAT64_MAX_INT = (1 << 53) - 1


def _json_leaf(value: Any, dtype: int) -> Any:
    def type_error() -> ServingError:
        return invalid_argument(
            f"JSON Value: {json_text(value)} Type: {json_type_name(value)} "
            f"is not of expected type: {dtype_name(dtype)}"
        )

    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF):
        if not is_number:
            raise type_error()
        limit = _FLOAT32_MAX_INT if dtype != types_pb2.DT_DOUBLE else _FLOAT64_MAX_INT
        target = "float" if dtype != types_pb2.DT_DOUBLE else "double"
        if isinstance(value, int) and abs(value) > limit:
            raise invalid_argument(
                f"Cannot convert JSON value: {json_text(value)} to {target} "
                "without loss of precision."
            )
        if (
            dtype != types_pb2.DT_DOUBLE
            and isinstance(value, float)
            and math.isfinite(value)
            and abs(value) > float(np.finfo(np.float32).max)
        ):
            raise invalid_argument(
                f"Cannot convert JSON value: {json_text(value)} to float without loss of precision."
            )
        return float(value)
    if dtype in (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise type_error()
        return value
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise type_error()
        return value
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, dict):
            return decode_b64_object(value)
        if not isinstance(value, str):
            raise type_error()
        return value.encode("utf-8")
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_text(value)} to type: {dtype_name(dtype)}",
    )


def json_to_ndarray(value: Any, dtype: int) -> np.ndarray:
    """A dense tensor from a JSON scalar or (nested) list, checked like the real
    server: every list at one level has the size of the first one there, and
    all values sit at the same depth."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    rank = len(shape)
    flat: list[Any] = []

    def fill(v: Any, level: int) -> None:
        if not isinstance(v, list):
            if level != rank:
                raise invalid_argument(
                    f"JSON Value: {json_text(v)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            flat.append(_json_leaf(v, dtype))
            return
        if level >= rank:
            raise invalid_argument(
                f"Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(v) != shape[level]:
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(v)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for item in v:
            fill(item, level + 1)

    fill(value, 0)
    np_dtype = object if dtype == types_pb2.DT_STRING else tf.as_dtype(dtype).as_numpy_dtype
    array = np.empty(len(flat), dtype=np_dtype)
    array[:] = flat
    return array.reshape(shape)
