"""Damaged and hostile checkpoints: every one is a one-line BeamMLError naming the file.

Each case writes a good checkpoint of a contract family (PCA, K-Means, Factorization
Machines, Linear Learner; states and models), then breaks one thing: a manifest field
(missing, wrong type, a path out of the folder, a symlink, a device), a payload header
field (missing, wrong type, NaN, negative, huge sizes, transposed shapes, code-holding
dtypes) or the payload's bytes. Breaks behind the checksums are re-signed (crc32,
fingerprint, sha256 recomputed) so they reach the deepest check, as a deliberate edit
would. Reading must then raise a ``BeamMLError`` on one line naming the checkpoint's
file, never another exception; what still loads must train, serialize and predict
without any other exception either (no ``IndexError`` deep in training).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beam_ml.core import serial
from beam_ml.core.errors import BeamMLError
from beam_ml.core.state import TrainingState, config_to_dict, state_class_for
from beam_ml.io.checkpoints import read_checkpoint, read_manifest, write_checkpoint
from tests.contract.cases import CASES

# PCA (both modes), K-Means, FM (both predictor types) and the linear learner.
FAMILIES = [c for c in CASES]

Edit = Callable[[dict[str, Any]], None]


def _trained(case, rng) -> TrainingState:
    state = state_class_for(case.config).empty(case.config)
    return state.update(case.feed(case.make_data(rng, 300)))


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<I", blob[8:12])
    return json.loads(blob[12 : 12 + n]), blob[12 + n :]


def _join(header: dict[str, Any], payload: bytes, original: dict[str, Any]) -> bytes:
    """Header and payload as bytes, re-signed where ``header`` left the signature alone."""
    if header.get("payload_crc32") == original["payload_crc32"]:
        header["payload_crc32"] = zlib.crc32(payload)
    config, family = header.get("config"), header.get("family")
    if header.get("fingerprint") == original["fingerprint"] and isinstance(config, dict):
        header["fingerprint"] = serial.fingerprint(str(family), config)
    head = json.dumps(header).encode()
    return serial.MAGIC + struct.pack("<I", len(head)) + head + payload


def _put_payload(directory: Path, blob: bytes) -> None:
    """Replace the payload's bytes and re-sign them in the manifest."""
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / manifest["payload"]).write_bytes(blob)
    manifest["payload_bytes"] = len(blob)
    manifest["payload_sha256"] = hashlib.sha256(blob).hexdigest()
    manifest["history"][0].update(
        payload_bytes=manifest["payload_bytes"], payload_sha256=manifest["payload_sha256"]
    )
    (directory / "manifest.json").write_text(json.dumps(manifest))


WRONG = [None, "x", -1, 1.5, [], {}, True, float("nan")]


def _header_edits(header: dict[str, Any]) -> Iterator[tuple[str, Edit]]:
    def setter(path: tuple, value: Any) -> Edit:
        def edit(h: dict[str, Any]) -> None:
            target = h
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return edit

    def deleter(path: tuple) -> Edit:
        def edit(h: dict[str, Any]) -> None:
            target = h
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]

        return edit

    for key in header:
        yield f"header-{key}-missing", deleter((key,))
        for value in WRONG:
            yield f"header-{key}={value!r}", setter((key,), value)
    for key in header["meta"]:
        yield f"meta-{key}-missing", deleter(("meta", key))
        for value in [*WRONG, -(10**6), float("inf"), 10**18]:
            yield f"meta-{key}={value!r}", setter(("meta", key), value)
    for key in header["config"]:
        yield f"config-{key}-missing", deleter(("config", key))
        for value in [None, "x", -1, 0, [], float("nan")]:
            yield f"config-{key}={value!r}", setter(("config", key), value)
    yield "config-unknown", setter(("config", "no_such_parameter"), 1)
    yield "family-unknown", setter(("family",), "no_such_algo")
    yield "kind-swapped", setter(("kind",), "model" if header["kind"] == "state" else "state")
    yield "serial_version-newer", setter(("serial_version",), header["serial_version"] + 1)
    for i, entry in enumerate(header["arrays"]):
        name = entry["name"]
        yield f"array-{name}-dropped", lambda h, i=i: h["arrays"].pop(i)
        yield f"array-{name}-renamed", setter(("arrays", i, "name"), name + "_x")
        if len(header["arrays"]) > 1:
            other = header["arrays"][(i + 1) % len(header["arrays"])]["name"]
            yield f"array-{name}-twice", setter(("arrays", i, "name"), other)
        for key in ("name", "dtype", "shape", "offset", "nbytes"):
            yield f"array-{name}-{key}-missing", deleter(("arrays", i, key))
            for value in (None, "x", -1, 1.5):
                yield f"array-{name}-{key}={value!r}", setter(("arrays", i, key), value)
        for dtype in ("|O8", "<U4", "<c16", "|V8", "<M8", "(2,)<f8"):
            yield f"array-{name}-dtype={dtype}", setter(("arrays", i, "dtype"), dtype)
        shape = entry["shape"]
        huge = [10**9] + shape[1:]
        yield f"array-{name}-shape-huge", setter(("arrays", i, "shape"), huge)
        yield (
            f"array-{name}-shape-and-nbytes-huge",
            lambda h, i=i, huge=huge: h["arrays"][i].update(
                shape=huge, nbytes=math.prod(huge) * np.dtype(h["arrays"][i]["dtype"]).itemsize
            ),
        )
        yield f"array-{name}-nbytes-huge", setter(("arrays", i, "nbytes"), 2**62)
        yield f"array-{name}-offset-past-end", setter(("arrays", i, "offset"), 2**40)
        if len(shape) == 2 and shape[0] != shape[1]:
            # Same bytes, transposed: only a check against the config can tell.
            yield f"array-{name}-transposed", setter(("arrays", i, "shape"), shape[::-1])
        if len(shape) >= 2 and shape[0] > 1:
            flat = [math.prod(shape)]
            yield f"array-{name}-flattened", setter(("arrays", i, "shape"), flat)
        if shape and shape[0] > 1:
            yield f"array-{name}-extra-axis", setter(("arrays", i, "shape"), [1, *shape])


def _cases() -> Iterator[Any]:
    for case in FAMILIES:
        for kind in ("state", "model"):
            yield pytest.param((case, kind), id=f"{case.name}-{kind}")


@pytest.fixture(params=list(_cases()))
def checkpoint(request, tmp_path, rng):
    case, kind = request.param
    state = _trained(case, rng)
    obj = state if kind == "state" else state.derive()
    directory = tmp_path / "ckpt"
    write_checkpoint(str(directory), obj)
    return case, kind, directory, obj


def _use(case, obj, rng) -> None:
    """Work a loaded object the way training and serving do."""
    data = case.make_data(rng, 40)
    if isinstance(obj, TrainingState):
        obj.update(case.feed(data))
        type(obj).from_bytes(obj.to_bytes())
        obj.merge(obj)
    else:
        obj.evaluate(case.feed(data))


def _assert_clear(directory: Path, case, rng, what: str) -> str:
    """Reading fails with one line naming a file of ``directory``, or the result works."""
    try:
        obj, _ = read_checkpoint(str(directory))
    except BeamMLError as exc:
        message = str(exc)
        assert "\n" not in message, (what, message)
        assert str(directory) in message, (what, message)
        return "refused"
    try:
        _use(case, obj, rng)
    except BeamMLError:
        pass
    return "loaded"


def test_every_broken_payload_header_is_a_clear_error(checkpoint, rng):
    case, kind, directory, _ = checkpoint
    blob = (directory / read_manifest(str(directory))["payload"]).read_bytes()
    header, payload = _split(blob)
    outcomes = {}
    for what, edit in _header_edits(header):
        tampered = copy.deepcopy(header)
        edit(tampered)
        _put_payload(directory, _join(tampered, payload, header))
        outcomes[what] = _assert_clear(directory, case, rng, what)
    refused = {w for w, o in outcomes.items() if o == "refused"}
    # What must be refused whatever the family: structure, sizes, shapes, dtypes, counts.
    must = [
        w
        for w in outcomes
        if w.startswith(("header-", "array-", "family-", "kind-", "serial_version-"))
        and w != "header-config={}"
        and not w.endswith("-dropped")  # optional arrays may come and go
        or w.startswith("meta-n_seen")
        or (kind == "state" and w.startswith("meta-") and "nan" in w.lower())
        or (kind == "state" and w.startswith("meta-") and "inf" in w.lower())
        or (kind == "state" and w in ("config-unknown", "header-config={}"))
    ]
    # Header fields nothing reads may be anything a JSON value can be.
    must = [w for w in must if not w.startswith("header-library_version")]
    if kind == "model":  # checked by evaluating one row: a reshape it survives may stay
        must = [w for w in must if not w.endswith(("-transposed", "-extra-axis", "-flattened"))]
    assert not set(must) - refused, sorted(set(must) - refused)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b[:12],
        lambda b: b"",
        lambda b: b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
        lambda b: b"\x93NUMPY\x01\x00\x10\x00{'descr': ((((",
        lambda b: serial.MAGIC + struct.pack("<I", 2**32 - 1) + b"{",
        lambda b: serial.MAGIC + struct.pack("<I", 5) + b"[1,2]",
        lambda b: serial.MAGIC + struct.pack("<I", 3) + b"\xff\xfe\xfd",
        lambda b: b[:20] + bytes(len(b) - 20),
    ],
    ids=["cut", "padded", "header-only", "empty", "npy", "npy-bad-tokens", "huge-head",
         "head-list", "head-not-utf8", "zeroed"],
)
def test_damaged_payload_bytes_are_clear_errors(checkpoint, rng, damage):
    case, _, directory, _ = checkpoint
    blob = (directory / read_manifest(str(directory))["payload"]).read_bytes()
    _put_payload(directory, damage(blob))
    assert _assert_clear(directory, case, rng, "bytes") == "refused"


def _manifest_edits(
    manifest: dict[str, Any], elsewhere: Path, other_config: dict[str, Any] | None
) -> Iterator:
    for key in manifest:
        yield f"{key}-missing", lambda m, key=key: m.pop(key)
        for value in WRONG:
            yield f"{key}={value!r}", lambda m, key=key, value=value: m.update({key: value})
    outside = elsewhere / manifest["payload"]
    for name in (
        "../../etc/passwd",
        "/etc/passwd",
        "/dev/zero",
        str(outside),
        f"../{elsewhere.name}/{manifest['payload']}",
        "sub/state.bin",
        ".hidden.bin",
        "*.bin",
        "",
        "a\nb.bin",
    ):
        yield f"payload={name!r}", lambda m, name=name: m.update(payload=name)
        yield f"history-payload={name!r}", lambda m, name=name: m["history"][0].update(payload=name)
    yield "payload_bytes-huge", lambda m: m.update(payload_bytes=10**12)
    yield "n_seen-negative", lambda m: m.update(n_seen=-5)
    yield "n_seen-other", lambda m: m.update(n_seen=m["n_seen"] + 1)
    yield "algorithm-other", lambda m: m.update(algorithm="pca" if m["algorithm"] != "pca" else "kmeans")
    yield "history-empty", lambda m: m.update(history=[])
    yield "history-not-objects", lambda m: m.update(history=[1])
    for key in ("payload", "payload_bytes", "payload_sha256", "n_seen"):
        yield f"history-{key}-missing", lambda m, key=key: m["history"][0].pop(key)
    if other_config is not None:  # a valid config, not the payload's
        yield "config-other", lambda m: m.update(config=other_config)

def test_every_broken_manifest_is_a_clear_error(checkpoint, rng, tmp_path):
    case, _, directory, obj = checkpoint
    elsewhere = tmp_path / "elsewhere"
    write_checkpoint(str(elsewhere), obj)  # a valid payload of the same name outside
    original = json.loads((directory / "manifest.json").read_text())
    (elsewhere / original["payload"]).write_bytes(
        (directory / original["payload"]).read_bytes()
    )
    other = config_to_dict(case.other_config) if original["kind"] == "state" else None
    # Manifests of before 2026-11-25 have no history: it may be missing, not wrong.
    required = {"format", "format_version", "kind", "algorithm", "payload", "payload_bytes",
                "payload_sha256", "n_seen", "config"}
    if other is None:  # a model's config is {}: nothing reads it
        required.discard("config")
    for what, edit in _manifest_edits(original, elsewhere, other):
        manifest = copy.deepcopy(original)
        edit(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))
        outcome = _assert_clear(directory, case, rng, what)
        key = what.split("=")[0].removesuffix("-missing")
        if key in original and ("=" in what or what.endswith("-missing")):  # one field
            same_type = key in manifest and type(manifest[key]) is type(original[key])
            if key in required and not same_type:
                assert outcome == "refused", what
        else:  # traversal, symlinks, sizes, counts, history entries, another config
            assert outcome == "refused", what

def test_payload_must_be_a_plain_file_in_the_folder(checkpoint, rng, tmp_path):
    case, _, directory, obj = checkpoint
    manifest = read_manifest(str(directory))
    payload = directory / manifest["payload"]
    good = payload.read_bytes()
    elsewhere = tmp_path / "valid-state-elsewhere.bin"
    elsewhere.write_bytes(good)
    for target in (elsewhere, Path("/dev/zero"), Path("/etc/passwd")):
        payload.unlink()
        payload.symlink_to(target)
        with pytest.raises(BeamMLError, match="symlink") as info:
            read_checkpoint(str(directory))
        assert str(directory) in str(info.value) and "\n" not in str(info.value)
    payload.unlink()
    payload.mkdir()
    with pytest.raises(BeamMLError, match="not a regular file"):
        read_checkpoint(str(directory))


def test_manifest_that_is_a_device_or_huge_is_a_clear_error(tmp_path, rng):
    directory = tmp_path / "ckpt"
    write_checkpoint(str(directory), _trained(CASES[0], rng))
    (directory / "manifest.json").unlink()
    (directory / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(BeamMLError, match="not a regular file"):
        read_manifest(str(directory))
    (directory / "manifest.json").unlink()
    with open(directory / "manifest.json", "wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: no disk used
    with pytest.raises(BeamMLError, match="larger than"):
        read_manifest(str(directory))


@pytest.mark.parametrize(
    "case", [c for c in FAMILIES if hasattr(c.config, "feature_dim")], ids=lambda c: c.name
)
def test_header_declaring_a_huge_feature_dim_is_refused_before_allocating(case, rng, tmp_path):
    """Regression (issue: a header declaring feature_dim 1e9 tried to allocate 89 GiB)."""
    import tracemalloc

    directory = tmp_path / "ckpt"
    write_checkpoint(str(directory), _trained(case, rng))
    blob = (directory / read_manifest(str(directory))["payload"]).read_bytes()
    header, payload = _split(blob)
    tampered = copy.deepcopy(header)
    tampered["config"]["feature_dim"] = 10**9
    _put_payload(directory, _join(tampered, payload, header))
    tracemalloc.start()
    try:
        with pytest.raises(BeamMLError) as info:
            read_checkpoint(str(directory))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(directory) in str(info.value) and "\n" not in str(info.value)
    assert peak < 50 << 20, peak
