"""SageMaker's recordIO-protobuf read as blocks, against files written by independent
writers: MXNet's own RecordIO writer (``mxnet.recordio``, dmlc-core's C++ framing, which
splits records that hold the magic number) and the SageMaker SDK's framing (plain frames,
no escaping), around ``Record`` messages serialized by the protobuf runtime from a schema
written here in protobuf text format (from SageMaker's ``record.proto``), not the reader's.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from beam_ml.core.errors import BadInputError
from beam_ml.io.sources import ReadCounts, read_blocks_local

_SCHEMA = """
name: "test_record.proto" package: "aialgs.data" syntax: "proto2"
message_type { name: "Float32Tensor"
  field { name: "values" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
  field { name: "keys" number: 2 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } }
  field { name: "shape" number: 3 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } } }
message_type { name: "Float64Tensor"
  field { name: "values" number: 1 label: LABEL_REPEATED type: TYPE_DOUBLE options { packed: true } }
  field { name: "keys" number: 2 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } }
  field { name: "shape" number: 3 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } } }
message_type { name: "Int32Tensor"
  field { name: "values" number: 1 label: LABEL_REPEATED type: TYPE_INT32 options { packed: true } }
  field { name: "keys" number: 2 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } }
  field { name: "shape" number: 3 label: LABEL_REPEATED type: TYPE_UINT64 options { packed: true } } }
message_type { name: "Bytes"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
  field { name: "content_type" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING } }
message_type { name: "Value"
  field { name: "float32_tensor" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".aialgs.data.Float32Tensor" oneof_index: 0 }
  field { name: "float64_tensor" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".aialgs.data.Float64Tensor" oneof_index: 0 }
  field { name: "int32_tensor" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".aialgs.data.Int32Tensor" oneof_index: 0 }
  field { name: "bytes" number: 9 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".aialgs.data.Bytes" oneof_index: 0 }
  oneof_decl { name: "value" } }
message_type { name: "Record"
  field { name: "features" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".aialgs.data.Record.FeaturesEntry" }
  field { name: "label" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".aialgs.data.Record.LabelEntry" }
  field { name: "uid" number: 3 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "metadata" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "configuration" number: 5 label: LABEL_OPTIONAL type: TYPE_STRING }
  nested_type { name: "FeaturesEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".aialgs.data.Value" } }
  nested_type { name: "LabelEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".aialgs.data.Value" } } }
"""

_TENSOR = {np.dtype(np.float32): "float32_tensor", np.dtype(np.float64): "float64_tensor"}


def record_type():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_SCHEMA, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))


def _label_tensor(record, label):
    if isinstance(label, (int, np.integer)):  # the SDK writes integer labels as Int32Tensor
        record.label["values"].int32_tensor.values.append(int(label))
    else:
        getattr(record.label["values"], _TENSOR[np.asarray(label).dtype]).values.append(label)


def dense_records(x, y=None):
    Record = record_type()
    for i, row in enumerate(x):
        record = Record()
        getattr(record.features["values"], _TENSOR[x.dtype]).values.extend(row.tolist())
        if y is not None:
            _label_tensor(record, y[i])
        yield record.SerializeToString()


def sparse_records(x: sp.csr_matrix, y=None):
    Record = record_type()
    for i in range(x.shape[0]):
        row = x.getrow(i)
        record = Record()
        tensor = record.features["values"].float32_tensor
        tensor.values.extend(row.data.tolist())
        tensor.keys.extend(row.indices.tolist())
        tensor.shape.append(x.shape[1])
        if y is not None:
            _label_tensor(record, y[i])
        yield record.SerializeToString()


def write_mxnet(path: Path, payloads) -> Path:
    """dmlc-core's RecordIO writer, as MXNet ships it."""
    import mxnet.recordio

    writer = mxnet.recordio.MXRecordIO(str(path), "w")
    for payload in payloads:
        writer.write(payload)
    writer.close()
    return path


def write_plain(path: Path, payloads) -> Path:
    """The SageMaker SDK's framing (sagemaker.amazon.common._write_recordio): magic,
    length, bytes, zero padding; no escaping of the magic number."""
    with open(path, "wb") as f:
        for payload in payloads:
            f.write(struct.pack("<II", 0xCED7230A, len(payload)))
            f.write(payload + b"\0" * (-len(payload) % 4))
    return path


def read(path, **options):
    dead, counts = [], ReadCounts()
    blocks = list(
        read_blocks_local(str(path), "recordio", dead_letters=dead, counts=counts, **options)
    )
    return blocks, dead, counts


def stack(blocks):
    features = [b.features for b in blocks]
    x = sp.vstack(features).tocsr() if sp.issparse(features[0]) else np.concatenate(features)
    y = None if blocks[0].labels is None else np.concatenate([b.labels for b in blocks])
    return x, y


@pytest.mark.parametrize("writer", [write_mxnet, write_plain])
def test_dense_float32_with_labels_reads_exactly(tmp_path, writer):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, 7)).astype(np.float32)
    y = rng.normal(size=2500).astype(np.float32)
    blocks, dead, counts = read(writer(tmp_path / "d.pbr", dense_records(x, y)), block_size=1000)
    assert dead == [] and counts.records_read == 2500
    assert [b.n_rows for b in blocks] == [1000, 1000, 500]
    assert [b.origin for b in blocks] == [(str(tmp_path / "d.pbr"), r) for r in (0, 1000, 2000)]
    got_x, got_y = stack(blocks)
    assert got_x.dtype == np.float32 and got_x.flags.c_contiguous
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y.astype(np.float64))


def test_float64_features_int_labels_and_no_labels(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))  # float64: Float64Tensor, as the SDK writes it
    y = rng.integers(-3, 200, size=300)  # Int32Tensor labels, some of several varint bytes
    blocks, dead, _ = read(write_plain(tmp_path / "a.rec", dense_records(x, y)), block_size=128)
    got_x, got_y = stack(blocks)
    assert dead == []
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    np.testing.assert_array_equal(got_y, y)
    blocks, dead, _ = read(write_mxnet(tmp_path / "b.rec", dense_records(x)))
    assert dead == [] and blocks[0].labels is None
    np.testing.assert_array_equal(stack(blocks)[0], x.astype(np.float32))


def test_sparse_records_become_csr_blocks(tmp_path):
    x = sp.random(400, 50, density=0.1, format="csr", dtype=np.float32, random_state=2)
    y = np.arange(400) % 2
    blocks, dead, _ = read(write_mxnet(tmp_path / "s.pbr", sparse_records(x, y)), block_size=150)
    got_x, got_y = stack(blocks)
    assert dead == [] and sp.issparse(blocks[0].features) and got_x.shape == (400, 50)
    np.testing.assert_array_equal(got_x.toarray(), x.toarray())
    np.testing.assert_array_equal(got_y, y)


def test_a_record_holding_the_magic_number_is_joined_from_its_parts(tmp_path):
    """MXNet's writer cuts a record where an aligned word equals the magic number (a
    float of about -1.8e9 here) and the reader must put it back."""
    magic_float = struct.unpack("<f", struct.pack("<I", 0xCED7230A))[0]
    x = np.ones((20, 5), dtype=np.float32)
    x[3, :] = magic_float
    x[11, 2] = magic_float
    path = write_mxnet(tmp_path / "m.rec", dense_records(x, np.arange(20.0, dtype=np.float32)))
    data = path.read_bytes()
    assert data.count(struct.pack("<I", 0xCED7230A)) > 20  # the records were split
    blocks, dead, _ = read(path)
    assert dead == []
    np.testing.assert_array_equal(stack(blocks)[0], x)


def test_bad_records_name_the_file_record_and_field(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = rng.normal(size=200).astype(np.float32)
    payloads = list(dense_records(x, y))
    Record = record_type()
    wide = Record()
    wide.features["values"].float32_tensor.values.extend([1.0, 2.0, 3.0, 4.0])
    wide.label["values"].float32_tensor.values.append(1.0)
    unlabelled = Record()
    unlabelled.features["values"].float32_tensor.values.extend([1.0, 2.0, 3.0])
    payloads[50] = wide.SerializeToString()
    payloads[60] = b"\xff\xff\xff\xff not a protobuf"
    payloads[70] = unlabelled.SerializeToString()
    nan_row = x.copy()
    nan_row[80, 1] = np.nan
    payloads[80] = list(dense_records(nan_row[80:81], y[80:81]))[0]
    path = write_plain(tmp_path / "bad.pbr", payloads)
    blocks, dead, counts = read(path, block_size=64)
    assert counts.records_read == 200 and counts.rows_set_aside == 4
    assert [d["offset"] for d in dead] == [50, 60, 70, 80]
    assert all(d["file"] == str(path) for d in dead)
    reasons = [d["reason"] for d in dead]
    assert reasons[0].startswith("record 50 (byte offset ")
    assert "features['values'] has 4 values, expected 3" in reasons[0]
    assert "not a SageMaker Record protobuf" in reasons[1]
    assert "label['values'] is missing" in reasons[2]
    assert "features['values'] value 1 is NaN" in reasons[3]
    keep = np.setdiff1d(np.arange(200), [50, 60, 70, 80])
    got_x, got_y = stack(blocks)
    np.testing.assert_array_equal(got_x, x[keep])
    np.testing.assert_array_equal(got_y, y[keep])


def test_broken_framing_and_wrong_options_are_clear_errors(tmp_path):
    x = np.ones((10, 2), dtype=np.float32)
    path = write_plain(tmp_path / "t.pbr", dense_records(x))
    data = path.read_bytes()
    (tmp_path / "cut.pbr").write_bytes(data[:-6])
    with pytest.raises(BadInputError, match=r"cut.pbr is truncated: its last RecordIO record"):
        read(tmp_path / "cut.pbr")
    (tmp_path / "junk.pbr").write_bytes(data[:32] + b"\0" * 8 + data[40:])
    with pytest.raises(BadInputError, match=r"junk.pbr: no RecordIO magic number at byte offset"):
        read(tmp_path / "junk.pbr")
    with pytest.raises(BadInputError, match="label_column must be None"):
        read(path, label_column=0)
    with pytest.raises(
        BadInputError, match="feature_dim=3 was given, but the recordio input has 2"
    ):
        read(path, feature_dim=3)


def _cli(*args):
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli.main", "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_trains_from_recordio_and_predicts_in_sagemaker_shapes(tmp_path):
    """PCA and K-Means from a .pbr file (told by its extension): the PCA equals numpy's
    SVD of the same rows; predictions are SageMaker's JSON lines, one per record in
    input order, a record set aside an empty line."""
    from beam_ml.core.block import Block
    from beam_ml.io.checkpoints import read_checkpoint

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    payloads = list(dense_records(x))
    payloads[7] = list(dense_records(x[:1, :5]))[0]  # 5 features: set aside
    path = write_mxnet(tmp_path / "train.pbr", payloads)
    out = _cli(
        "train",
        "pca",
        "--input",
        path,
        "--output",
        tmp_path / "state",
        "--num_components",
        2,
        "--mini_batch_size",
        128,
    )
    assert out["n_seen"] == 499
    _cli("derive", tmp_path / "state", "--output", tmp_path / "model", "--num_components", 2)
    model, _ = read_checkpoint(str(tmp_path / "model"))
    rows = np.delete(x, 7, axis=0).astype(np.float64)
    top = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)[2][:2]
    np.testing.assert_allclose(np.abs(model.components @ top.T), np.eye(2), atol=1e-4)

    _cli(
        "predict",
        tmp_path / "model",
        "--input",
        path,
        "--output",
        tmp_path / "p.jsonl",
        "--output_format",
        "sagemaker",
        "--mini_batch_size",
        128,
    )
    lines = (tmp_path / "p.jsonl").read_text().split("\n")[:-1]
    assert len(lines) == 500 and lines[7] == ""
    expected = model.evaluate(Block(x))
    got = np.array([json.loads(line)["projection"] for i, line in enumerate(lines) if i != 7])
    np.testing.assert_allclose(got, np.delete(expected, 7, axis=0), rtol=1e-6, atol=1e-6)

    _cli("train", "kmeans", "--input", path, "--output", tmp_path / "km", "--k", 3)
    _cli("derive", tmp_path / "km", "--output", tmp_path / "kmm")
    _cli(
        "predict",
        tmp_path / "kmm",
        "--input",
        path,
        "--output",
        tmp_path / "k.jsonl",
        "--output_format",
        "sagemaker",
    )
    kmeans, _ = read_checkpoint(str(tmp_path / "kmm"))
    lines = (tmp_path / "k.jsonl").read_text().split("\n")[:-1]
    answers = [json.loads(line) for i, line in enumerate(lines) if i != 7]
    assert set(answers[0]) == {"closest_cluster", "distance_to_cluster"}
    distances = ((np.delete(x, 7, axis=0)[:, None, :] - kmeans.centres[None]) ** 2).sum(-1)
    np.testing.assert_array_equal([a["closest_cluster"] for a in answers], distances.argmin(1))
    np.testing.assert_allclose(
        [a["distance_to_cluster"] for a in answers], np.sqrt(distances.min(1)), rtol=1e-4
    )


@pytest.mark.parametrize(
    "family, columns, outputs, expected",
    [
        ("linear_learner", ["score"], [[2.5]], {"score": 2.5}),
        (
            "linear_learner",
            ["probability", "predicted_label"],
            [[0.75, 1]],
            {"score": 0.75, "predicted_label": 1},
        ),
        (
            "factorization_machines",
            ["score", "predicted_label"],
            [[-0.5, 0]],
            {"score": -0.5, "predicted_label": 0},
        ),
        (
            "linear_learner",
            ["predicted_label", "probability_0", "probability_1", "probability_2"],
            [[2, 0.25, 0.25, 0.5]],
            {"score": [0.25, 0.25, 0.5], "predicted_label": 2},
        ),
        ("pca", ["projection_0", "projection_1"], [[1.5, -2.0]], {"projection": [1.5, -2.0]}),
        (
            "kmeans",
            ["cluster", "distance"],
            [[4, 0.125]],
            {"closest_cluster": 4, "distance_to_cluster": 0.125},
        ),
        (
            "ntm",
            ["topic_weight_0", "topic_weight_1"],
            [[0.75, 0.25]],
            {"topic_weights": [0.75, 0.25]},
        ),
    ],
)
def test_sagemaker_response_shapes(family, columns, outputs, expected):
    from beam_ml.io.sagemaker import row_formatter

    text = row_formatter(family, columns)(np.array(outputs, dtype=np.float64)).decode()
    assert text.endswith("\n") and json.loads(text) == expected
