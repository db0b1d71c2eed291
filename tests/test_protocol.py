"""Wire protocol: round trips of every message type, zero-copy framing, validation, fuzzing."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_addon import protocol as P


def roundtrip(msg: P.Message) -> P.Message:
    return P.decode([bytes(f) if not isinstance(f, bytes) else f for f in P.encode(msg)])


@pytest.mark.parametrize("mtype", list(P.MsgType))
def test_every_message_type_round_trips(mtype):
    arrays = {
        "mesh.vertices": np.random.default_rng(0).random((7, 3), dtype=np.float32),
        "mesh.faces": np.arange(9, dtype=np.int32).reshape(3, 3) % 7,
        "empty": np.zeros((0, 3), np.float32),
        "mask": np.array([True, False]),
    }
    msg = P.Message(mtype, job="j-1", method="mesh_stats", params={"a": 1, "b": [1.5, "x"], "c": {"d": None}},
                    arrays=arrays, body={"fraction": 0.5, "nested": {"k": [1, 2]}})
    out = roundtrip(msg)
    assert out.type == mtype and out.id == msg.id and out.job == "j-1" and out.method == "mesh_stats"
    assert out.params == msg.params and out.body == msg.body and out.version == P.PROTOCOL_VERSION
    assert list(out.arrays) == list(arrays)
    for k, a in arrays.items():
        assert out.arrays[k].dtype == a.dtype and out.arrays[k].shape == a.shape
        np.testing.assert_array_equal(out.arrays[k], a)


@pytest.mark.parametrize("dtype", list(P.DTYPES))
def test_every_whitelisted_dtype(dtype):
    a = (np.arange(24) % 2 == 0) if dtype == "bool" else np.arange(24).astype(dtype)
    out = roundtrip(P.Message(P.MsgType.RESULT, arrays={"a": a.reshape(2, 3, 4)}))
    np.testing.assert_array_equal(out.arrays["a"], a.reshape(2, 3, 4))


def test_big_endian_and_non_contiguous_inputs_are_normalised():
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    b = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    out = roundtrip(P.Message(P.MsgType.SUBMIT, job="j", method="m", arrays={"a": a, "b": b}))
    assert out.arrays["a"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(out.arrays["a"], a)
    np.testing.assert_array_equal(out.arrays["b"], b)


def test_unsupported_dtype_is_refused_when_encoding():
    with pytest.raises(P.ProtocolError) as e:
        P.encode(P.Message(P.MsgType.SUBMIT, arrays={"c": np.zeros(3, np.complex64)}))
    assert e.value.code == P.ErrorCode.BAD_DTYPE


def test_frames_are_zero_copy_both_ways():
    v = np.random.default_rng(1).random((1000, 3), dtype=np.float32)
    frames = P.encode(P.Message(P.MsgType.SUBMIT, job="j", method="m", arrays={"v": v}))
    assert np.shares_memory(frames[1], v), "encode copied the array"
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://zc")
        b.connect("inproc://zc")
        a.send_multipart(frames, copy=False)
        got = P.recv_frames(b)
        out = P.decode(got)
        # The decoded array is a read-only view over the received frame's buffer.
        assert not out.arrays["v"].flags.writeable
        assert np.shares_memory(out.arrays["v"], np.frombuffer(got[1].buffer, np.uint8))
        np.testing.assert_array_equal(out.arrays["v"], v)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def _header(**over):
    h = {"v": [1, 0], "id": "abc", "type": "submit", "job": "j", "method": "m", "params": {}, "arrays": [], "body": {}}
    h.update(over)
    return msgpack.packb(h)


def _code(frames, limits=P.DEFAULT_LIMITS):
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames, limits)
    return e.value.code


def test_validation_errors_have_codes():
    E = P.ErrorCode
    spec = [{"name": "v", "dtype": "float32", "shape": [2, 3], "frame": 1}]
    good = np.zeros((2, 3), np.float32).tobytes()
    assert P.decode([_header(arrays=spec), good]).arrays["v"].shape == (2, 3)
    assert _code([]) == E.BAD_MESSAGE
    assert _code([b"\xc1not msgpack"]) == E.BAD_MESSAGE
    assert _code([msgpack.packb([1, 2])]) == E.BAD_MESSAGE
    assert _code([_header(v=[2, 0])]) == E.UNSUPPORTED_VERSION
    assert _code([_header(type="launch_missiles")]) == E.BAD_MESSAGE
    assert _code([_header(method="Bad Name!")]) == E.BAD_MESSAGE
    assert _code([_header(params=[1])]) == E.BAD_PARAMS
    assert _code([_header(arrays=spec)]) == E.BAD_MESSAGE  # truncated: frame missing
    assert _code([_header(arrays=spec), good, b"extra"]) == E.BAD_MESSAGE
    assert _code([_header(arrays=spec), good[:-4]]) == E.SHAPE_MISMATCH  # truncated frame
    assert _code([_header(arrays=[dict(spec[0], dtype="object")]), good]) == E.BAD_DTYPE
    assert _code([_header(arrays=[dict(spec[0], shape=[-1, 3])]), good]) == E.SHAPE_MISMATCH
    assert _code([_header(arrays=[dict(spec[0], frame=0)]), good]) == E.BAD_MESSAGE
    nan = np.zeros((2, 3), np.float32)
    nan[1, 2] = np.nan
    assert _code([_header(arrays=spec), nan.tobytes()]) == E.NON_FINITE
    inf = np.zeros((2, 3), np.float32)
    inf[0, 0] = np.inf
    assert _code([_header(arrays=spec), inf.tobytes()]) == E.NON_FINITE
    small = P.Limits(max_array_bytes=16)
    assert _code([_header(arrays=spec), good], small) == E.TOO_LARGE
    assert _code([b"\x00" * 100], P.Limits(max_header_bytes=10)) == E.TOO_LARGE
    deep: dict = {}
    d = deep
    for _ in range(20):
        d["x"] = {}
        d = d["x"]
    assert _code([_header(params=deep)]) == E.BAD_PARAMS


def test_version_mismatch_message_names_both_versions():
    with pytest.raises(P.ProtocolError) as e:
        P.decode([_header(v=[7, 3])])
    assert "7.3" in e.value.message and f"{P.PROTOCOL_MAJOR}.{P.PROTOCOL_MINOR}" in e.value.message


def test_mesh_input_validation():
    E = P.ErrorCode
    v = np.zeros((4, 3), np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    inputs = [{"name": "mesh", "kind": "mesh"}]
    P.validate_inputs(P.mesh_arrays("mesh", v, f), inputs)

    def code(arrays):
        with pytest.raises(P.ProtocolError) as e:
            P.validate_inputs(arrays, inputs)
        return e.value.code

    assert code({}) == E.BAD_INPUT
    assert code(P.mesh_arrays("mesh", v, f + 2)) == E.INDEX_OUT_OF_RANGE
    assert code(P.mesh_arrays("mesh", v, f - 1)) == E.INDEX_OUT_OF_RANGE
    assert code({"mesh.vertices": v.astype(np.int32), "mesh.faces": f}) == E.BAD_DTYPE
    assert code({"mesh.vertices": v, "mesh.faces": f.astype(np.float32)}) == E.BAD_DTYPE
    assert code({"mesh.vertices": v[:, :2], "mesh.faces": f}) == E.SHAPE_MISMATCH
    assert code(P.mesh_arrays("mesh", v, np.zeros((0, 3)))) == E.BAD_INPUT
    assert code({"mesh.vertices": v}) == E.BAD_INPUT


# --------------------------------------------------------------------------- fuzzing

_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.binary(max_size=200), min_size=0, max_size=5))
def test_fuzz_random_bytes_never_crash(frames):
    try:
        P.decode(frames)
    except P.ProtocolError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.fixed_dictionaries(
        {},
        optional={
            "v": st.one_of(st.just([1, 0]), _msgpack_values),
            "id": st.one_of(st.just("abc"), _msgpack_values),
            "type": st.one_of(st.sampled_from([t.value for t in P.MsgType]), _msgpack_values),
            "job": _msgpack_values,
            "method": _msgpack_values,
            "params": _msgpack_values,
            "body": _msgpack_values,
            "arrays": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "name": st.one_of(st.just("a"), _msgpack_values),
                            "dtype": st.one_of(st.sampled_from(list(P.DTYPES)), _msgpack_values),
                            "shape": st.one_of(st.lists(st.integers(-2, 8), max_size=3), _msgpack_values),
                            "frame": st.one_of(st.integers(-1, 3), _msgpack_values),
                        },
                    ),
                    max_size=3,
                ),
                _msgpack_values,
            ),
        },
    ),
    payloads=st.lists(st.binary(max_size=96), max_size=3),
)
def test_fuzz_structured_headers_never_crash(header, payloads):
    """Well-formed msgpack with hostile fields: only ProtocolError, and valid results are consistent."""
    try:
        msg = P.decode([msgpack.packb(header, use_bin_type=True), *payloads])
    except P.ProtocolError as exc:
        assert isinstance(exc.code, P.ErrorCode) and exc.message
        return
    for name, arr in msg.arrays.items():
        assert isinstance(name, str)
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all()
