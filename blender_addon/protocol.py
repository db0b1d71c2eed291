"""ShapeBridge wire protocol: the single owner of framing, validation and error codes.

Pure module: needs only numpy and msgpack (pyzmq only for the optional socket helpers
at the bottom, imported lazily). Both the Blender add-on and the backend import it.

A message is a ZeroMQ multipart message::

    frame 0      msgpack header (a map, see `Message`)
    frame 1..n   raw array buffers: C-contiguous, little-endian, one per array

The header names every array (name, dtype, shape, frame index). Arrays are sent from
their own memory (``copy=False``) and received as read-only views over the received
frames (`numpy.frombuffer`), so a 1M-vertex mesh is never copied by the framing.

See ``docs/protocol.md`` for the full specification.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

# Protocol version, separate from the package version. A peer with another MAJOR is
# refused with a message naming both; a newer MINOR only adds optional fields.
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
PROTOCOL_VERSION = (PROTOCOL_MAJOR, PROTOCOL_MINOR)


class MsgType(enum.StrEnum):
    """Message types. Direction: C = client to server, S = server to client."""

    HELLO = "hello"  # C: versions; S: versions, device, methods and their schemas
    SUBMIT = "submit"  # C: method, params, input arrays
    ACCEPTED = "accepted"  # S: job queued (body: position in queue)
    PROGRESS = "progress"  # S: fraction, stage, message, optional preview arrays
    RESULT = "result"  # S: output arrays and metadata (scores, provenance)
    ERROR = "error"  # S: code, message, detail
    CANCELLED = "cancelled"  # S: the job stopped at the client's request
    CANCEL = "cancel"  # C: cancel the job named in `job`
    HEARTBEAT = "heartbeat"  # both ways: liveness; S includes its instance id


class ErrorCode(enum.StrEnum):
    """Error codes carried by ``error`` messages and `ProtocolError`."""

    BAD_MESSAGE = "bad_message"  # frames or header malformed / truncated
    UNSUPPORTED_VERSION = "unsupported_version"  # protocol major differs
    BAD_DTYPE = "bad_dtype"  # dtype not in the whitelist, or wrong for the input
    SHAPE_MISMATCH = "shape_mismatch"  # declared shape vs bytes, or wrong shape for input
    NON_FINITE = "non_finite"  # NaN or inf in a float array
    INDEX_OUT_OF_RANGE = "index_out_of_range"  # face index outside the vertex array
    TOO_LARGE = "too_large"  # a size cap was exceeded
    UNKNOWN_METHOD = "unknown_method"
    BAD_PARAMS = "bad_params"  # parameter missing, of the wrong type or out of range
    BAD_INPUT = "bad_input"  # required input missing or inconsistent
    UNKNOWN_JOB = "unknown_job"
    DUPLICATE_JOB = "duplicate_job"
    METHOD_FAILED = "method_failed"  # the method raised while running
    INTERNAL = "internal"  # a bug in the server; the message says so
    # Raised on the client side only:
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    AUTH_FAILED = "auth_failed"
    BACKEND_RESTARTED = "backend_restarted"
    CANCELLED = "cancelled"


class ProtocolError(Exception):
    """A message or input that cannot be used, with a code and a sentence a user can act on."""

    def __init__(self, code: ErrorCode | str, message: str, detail: Mapping[str, Any] | None = None):
        self.code = ErrorCode(code)
        self.message = message
        self.detail = dict(detail or {})
        super().__init__(f"[{self.code.value}] {message}")


# dtype whitelist: wire name -> numpy dtype (always little-endian on the wire).
DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "bool": np.dtype("?"),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]{1,128}$")
_METHOD_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Limits:
    """Size caps applied to every received message. Defaults suit a local backend."""

    max_header_bytes: int = 4 << 20
    max_arrays: int = 64
    max_ndim: int = 6
    max_array_bytes: int = 1 << 30  # 1 GiB per array
    max_total_bytes: int = 2 << 30  # 2 GiB per message
    max_params_depth: int = 8


DEFAULT_LIMITS = Limits()


@dataclass
class Message:
    """One protocol message.

    type: the message type.
    id: unique message id (hex string).
    job: job id the message refers to (submit, accepted, progress, result, error,
        cancelled, cancel), else None. Chosen by the client at submit.
    method: method name (submit, and echoed in accepted/result), else None.
    params: method parameters (submit) - msgpack-able scalars, lists, maps.
    arrays: named arrays, C-contiguous little-endian. Received arrays are read-only
        views over the received frames.
    body: type-specific fields: hello info, progress {fraction, stage, message},
        error {code, message, detail}, result metadata {scores, provenance, ...}.
    version: the sender's protocol version (major, minor).
    """

    type: MsgType
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    job: str | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    version: tuple[int, int] = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        self.type = MsgType(self.type)


# --------------------------------------------------------------------------- encoding


def wire_array(a: Any) -> np.ndarray:
    """Return `a` as a C-contiguous little-endian array of a whitelisted dtype.

    Copies only when needed (non-contiguous, big-endian, or a Python sequence).
    """
    arr = np.asarray(a)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if dtype_name(arr.dtype) is None:
        raise ProtocolError(
            ErrorCode.BAD_DTYPE,
            f"dtype {arr.dtype} cannot be sent; use one of {', '.join(DTYPES)}",
        )
    return np.ascontiguousarray(arr)


def dtype_name(dt: np.dtype) -> str | None:
    """Wire name of a numpy dtype, or None if it is not whitelisted."""
    dt = np.dtype(dt)
    for name, ref in DTYPES.items():
        if dt == ref:
            return name
    return None


def encode(msg: Message) -> list[Any]:
    """Encode a message into frames: ``[header bytes, array buffer, ...]``.

    Array frames are the arrays themselves (buffer protocol, no copy); send them with
    ``copy=False`` and do not modify them until the send completes.
    """
    arrays = []
    frames: list[Any] = [b""]
    for i, (name, a) in enumerate(msg.arrays.items(), start=1):
        arr = wire_array(a)
        arrays.append({"name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "frame": i})
        # A zero-size array still gets a frame (empty); reshape(-1) keeps it zero-copy.
        frames.append(arr.reshape(-1).view(np.uint8) if arr.size else b"")
    header = {
        "v": list(msg.version),
        "id": msg.id,
        "type": msg.type.value,
        "job": msg.job,
        "method": msg.method,
        "params": msg.params,
        "arrays": arrays,
        "body": msg.body,
    }
    frames[0] = msgpack.packb(header, use_bin_type=True, default=_msgpack_default)
    return frames


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot put {type(obj).__name__} in a message header; send arrays as arrays")


# --------------------------------------------------------------------------- decoding


def _buffer(frame: Any) -> memoryview:
    """A memoryview over a received frame (bytes, memoryview or zmq.Frame)."""
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return memoryview(buf if buf is not None else frame)


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate frames into a `Message`. Raises `ProtocolError`, never anything else.

    Checks: frame count, header size and structure, protocol major, message type, ids,
    dtype whitelist, shape against byte length, size caps, finite float values.
    """
    try:
        return _decode(frames, limits)
    except ProtocolError:
        raise
    except Exception as exc:  # defensive: a malformed message must never escape as a crash
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message could not be decoded: {exc}") from None


def peek_header(frames: Sequence[Any]) -> dict[str, Any]:
    """Best-effort header of a message that failed validation (to echo its id and job)."""
    try:
        h = msgpack.unpackb(bytes(_buffer(frames[0])[: DEFAULT_LIMITS.max_header_bytes]), raw=False)
        if isinstance(h, dict):
            return {
                k: h.get(k) for k in ("id", "job", "type", "method") if isinstance(h.get(k), str | None)
            }
    except Exception:
        pass
    return {}


def _decode(frames: Sequence[Any], limits: Limits) -> Message:
    if len(frames) == 0:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message: expected a header frame")
    head = _buffer(frames[0])
    if head.nbytes > limits.max_header_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"header is {head.nbytes} bytes; the limit is {limits.max_header_bytes}",
        )
    try:
        header = msgpack.unpackb(
            head,
            raw=False,
            strict_map_key=True,
        )
    except Exception as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header is not valid msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header must be a msgpack map")

    version = header.get("v")
    if (
        not isinstance(version, list)
        or len(version) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in version)
    ):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'v' must be [major, minor]")
    if version[0] != PROTOCOL_MAJOR:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"peer speaks protocol {version[0]}.{version[1]}, this side speaks "
            f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; upgrade the older side so the major versions match",
            {"peer": version, "supported": list(PROTOCOL_VERSION)},
        )

    try:
        mtype = MsgType(header.get("type"))
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"unknown message type {header.get('type')!r}; expected one of "
            + ", ".join(t.value for t in MsgType),
        ) from None
    mid = header.get("id")
    if not isinstance(mid, str) or not 1 <= len(mid) <= 64:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'id' must be a string of 1-64 characters")
    job = header.get("job")
    if job is not None and (not isinstance(job, str) or not _NAME_RE.match(job)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'job' must be a short id string or nil")
    method = header.get("method")
    if method is not None and (not isinstance(method, str) or not _METHOD_RE.match(method)):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "header field 'method' must be a lower-case identifier or nil"
        )
    params = header.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.BAD_PARAMS, "header field 'params' must be a map")
    _check_depth(params, limits.max_params_depth)
    body = header.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'body' must be a map")
    specs = header.get("arrays", [])
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'arrays' must be a list")
    if len(specs) > limits.max_arrays:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"{len(specs)} arrays in one message; the limit is {limits.max_arrays}"
        )
    if len(frames) != 1 + len(specs):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"header declares {len(specs)} array(s) so the message needs {1 + len(specs)} frames, "
            f"but it has {len(frames)} (truncated or extra frames)",
        )

    arrays: dict[str, np.ndarray] = {}
    used_frames: set[int] = set()
    total = 0
    for spec in specs:
        name, arr, nbytes = _decode_array(spec, frames, used_frames, limits)
        if name in arrays:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"array {name!r} is declared twice")
        total += nbytes
        if total > limits.max_total_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"message carries more than {limits.max_total_bytes} bytes of arrays",
            )
        arrays[name] = arr
    return Message(
        type=mtype,
        id=mid,
        job=job,
        method=method,
        params=params,
        arrays=arrays,
        body=body,
        version=(version[0], version[1]),
    )


def _decode_array(
    spec: Any, frames: Sequence[Any], used: set[int], limits: Limits
) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "each entry of 'arrays' must be a map")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"array name {name!r} is not a valid identifier")
    dname = spec.get("dtype")
    if dname not in DTYPES:
        raise ProtocolError(
            ErrorCode.BAD_DTYPE,
            f"array {name!r} has dtype {dname!r}; allowed: {', '.join(DTYPES)}",
            {"array": name},
        )
    dt = DTYPES[dname]
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > limits.max_ndim
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH,
            f"array {name!r} has shape {shape!r}; expected a list of at most "
            f"{limits.max_ndim} non-negative integers",
            {"array": name},
        )
    idx = spec.get("frame")
    if not isinstance(idx, int) or isinstance(idx, bool) or not 1 <= idx < len(frames) or idx in used:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"array {name!r} names frame {idx!r}, which is missing or reused"
        )
    used.add(idx)
    count = math.prod(shape)
    nbytes = count * dt.itemsize
    if nbytes > limits.max_array_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"array {name!r} is {nbytes} bytes; the limit is {limits.max_array_bytes}",
            {"array": name},
        )
    buf = _buffer(frames[idx])
    if buf.nbytes != nbytes:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH,
            f"array {name!r} declares {dname}{tuple(shape)} = {nbytes} bytes but its frame has "
            f"{buf.nbytes} bytes (truncated or wrong shape)",
            {"array": name, "expected_bytes": nbytes, "got_bytes": buf.nbytes},
        )
    arr = np.frombuffer(buf, dtype=dt, count=count).reshape(shape) if count else np.zeros(shape, dt)
    arr.flags.writeable = False  # a view of the received frame: consumers copy before changing it
    if dt.kind == "f" and count and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ProtocolError(
            ErrorCode.NON_FINITE,
            f"array {name!r} contains {bad} NaN or infinite value(s)",
            {"array": name, "count": bad},
        )
    return name, arr, nbytes


def _check_depth(obj: Any, depth: int) -> None:
    if depth < 0:
        raise ProtocolError(ErrorCode.BAD_PARAMS, "params are nested too deeply")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_depth(v, depth - 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_depth(v, depth - 1)


# --------------------------------------------------------------------------- message builders


def hello(**info: Any) -> Message:
    return Message(MsgType.HELLO, body=info)


def error_message(
    code: ErrorCode | str,
    message: str,
    detail: Mapping[str, Any] | None = None,
    job: str | None = None,
) -> Message:
    return Message(
        MsgType.ERROR,
        job=job,
        body={"code": ErrorCode(code).value, "message": message, "detail": dict(detail or {})},
    )


def progress_message(
    job: str,
    fraction: float,
    stage: str = "",
    message: str = "",
    preview: Mapping[str, np.ndarray] | None = None,
) -> Message:
    f = float(fraction)
    f = 0.0 if not math.isfinite(f) else min(max(f, 0.0), 1.0)
    return Message(
        MsgType.PROGRESS,
        job=job,
        arrays=dict(preview or {}),
        body={"fraction": f, "stage": stage, "message": message},
    )


# --------------------------------------------------------------------------- input kinds
# Inputs of a method are named groups of arrays: "<input>.<field>", e.g. "source.vertices".
# These checks run on both sides (the client checks before sending, the server on receipt).

INPUT_KINDS = ("mesh", "points", "image", "camera")


def group(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays named ``prefix.<field>`` as ``{field: array}``."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}


def mesh_arrays(prefix: str, vertices: Any, faces: Any, **extra: Any) -> dict[str, np.ndarray]:
    """Arrays for a mesh input: vertices (V, 3) float32, faces (F, 3) int32, extras as given."""
    out = {
        f"{prefix}.vertices": np.asarray(vertices, dtype=np.float32),
        f"{prefix}.faces": np.asarray(faces, dtype=np.int32),
    }
    out.update({f"{prefix}.{k}": np.asarray(v) for k, v in extra.items()})
    return out


def _need(g: Mapping[str, np.ndarray], prefix: str, key: str) -> np.ndarray:
    if key not in g:
        raise ProtocolError(
            ErrorCode.BAD_INPUT, f"input {prefix!r} lacks the array '{prefix}.{key}'", {"input": prefix}
        )
    return g[key]


def validate_mesh(g: Mapping[str, np.ndarray], prefix: str, max_vertices: int = 20_000_000) -> None:
    """Check a mesh input: vertices (V, 3) float, faces (F, 3) integer with 0 <= index < V."""
    v = _need(g, prefix, "vertices")
    f = _need(g, prefix, "faces")
    if v.dtype.kind != "f":
        raise ProtocolError(
            ErrorCode.BAD_DTYPE,
            f"'{prefix}.vertices' must be float32 or float64, got {v.dtype}",
            {"input": prefix},
        )
    if f.dtype.kind not in "iu":
        raise ProtocolError(
            ErrorCode.BAD_DTYPE, f"'{prefix}.faces' must be an integer array, got {f.dtype}", {"input": prefix}
        )
    if v.ndim != 2 or v.shape[1] != 3:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH, f"'{prefix}.vertices' must have shape (V, 3), got {v.shape}", {"input": prefix}
        )
    if f.ndim != 2 or f.shape[1] != 3:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH,
            f"'{prefix}.faces' must have shape (F, 3) (triangles), got {f.shape}",
            {"input": prefix},
        )
    if v.shape[0] == 0 or f.shape[0] == 0:
        raise ProtocolError(
            ErrorCode.BAD_INPUT,
            f"mesh {prefix!r} has {v.shape[0]} vertices and {f.shape[0]} faces; it needs both",
            {"input": prefix},
        )
    if v.shape[0] > max_vertices:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"mesh {prefix!r} has {v.shape[0]} vertices; the limit is {max_vertices}"
        )
    lo, hi = int(f.min()), int(f.max())
    if lo < 0 or hi >= v.shape[0]:
        bad = lo if lo < 0 else hi
        raise ProtocolError(
            ErrorCode.INDEX_OUT_OF_RANGE,
            f"mesh {prefix!r} has a face index {bad} outside 0..{v.shape[0] - 1}",
            {"input": prefix, "index": bad, "vertices": int(v.shape[0])},
        )


def validate_points(g: Mapping[str, np.ndarray], prefix: str) -> None:
    """Check a point-cloud input: points (N, 3) float, optional normals (N, 3)."""
    p = _need(g, prefix, "points")
    if p.dtype.kind != "f" or p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH,
            f"'{prefix}.points' must be a non-empty float array of shape (N, 3), got {p.dtype}{p.shape}",
            {"input": prefix},
        )
    n = g.get("normals")
    if n is not None and n.shape != p.shape:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH, f"'{prefix}.normals' must match the points' shape {p.shape}", {"input": prefix}
        )


def validate_image(g: Mapping[str, np.ndarray], prefix: str) -> None:
    """Check an image input: pixels (H, W, C) uint8 or float, C in 1, 3, 4; top row first."""
    im = _need(g, prefix, "pixels")
    if im.ndim != 3 or im.shape[2] not in (1, 3, 4) or im.shape[0] == 0 or im.shape[1] == 0:
        raise ProtocolError(
            ErrorCode.SHAPE_MISMATCH,
            f"'{prefix}.pixels' must have shape (H, W, 1|3|4), got {im.shape}",
            {"input": prefix},
        )
    if im.dtype not in (np.uint8, np.float16, np.float32):
        raise ProtocolError(
            ErrorCode.BAD_DTYPE, f"'{prefix}.pixels' must be uint8 or float32, got {im.dtype}", {"input": prefix}
        )


def validate_camera(g: Mapping[str, np.ndarray], prefix: str) -> None:
    """Check a camera input (OpenCV convention): K (3, 3), R (3, 3), t (3,), size (2,) = (H, W)."""
    for key, shape in (("K", (3, 3)), ("R", (3, 3)), ("t", (3,)), ("size", (2,))):
        a = _need(g, prefix, key)
        if a.shape != shape:
            raise ProtocolError(
                ErrorCode.SHAPE_MISMATCH,
                f"'{prefix}.{key}' must have shape {shape}, got {a.shape}",
                {"input": prefix},
            )


VALIDATORS = {
    "mesh": validate_mesh,
    "points": validate_points,
    "image": validate_image,
    "camera": validate_camera,
}


def validate_inputs(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> None:
    """Validate arrays against a method's input spec: ``[{"name", "kind", "optional"}, ...]``."""
    for spec in inputs:
        prefix, kind = spec["name"], spec["kind"]
        g = group(arrays, prefix)
        if not g:
            if spec.get("optional"):
                continue
            raise ProtocolError(
                ErrorCode.BAD_INPUT,
                f"the method needs a {kind} input named {prefix!r} and none was sent",
                {"input": prefix},
            )
        VALIDATORS[kind](g, prefix)


# --------------------------------------------------------------------------- sockets (pyzmq)


def send(sock: Any, msg: Message, identity: bytes | None = None) -> None:
    """Send a message on a zmq socket without copying array buffers (ROUTER: pass identity)."""
    frames = encode(msg)
    if identity is not None:
        frames = [identity, *frames]
    sock.send_multipart(frames, copy=False)


def recv_frames(sock: Any, flags: int = 0) -> list[Any]:
    """Receive a multipart message as zero-copy frames."""
    return sock.recv_multipart(flags=flags, copy=False)
