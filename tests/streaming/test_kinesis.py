"""Kinesis streams as training input: ReadKinesis and KinesisFeed through boto3 against
kinesalite on 127.0.0.1, which models resharding as Kinesis does; the bounded read
without resharding also against moto's server mode, which does not (kinesis_server.py
says how)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest

from beam_ml import PCAConfig, PCAState, read_checkpoint
from beam_ml.core.errors import BadInputError
from beam_ml.io.checkpoints import read_manifest
from beam_ml.io.kinesis import DRAINED, ReadKinesis, latest_positions, parse_kinesis_url
from tests.conftest import REPO
from tests.streaming.cloud_servers import AWS_ENV, MotoServer
from tests.streaming.helpers import run_source, stack
from tests.streaming.kinesis_server import Kinesalite

pytestmark = pytest.mark.streaming


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def kinesis():
    """Kinesalite, and the environment that points boto3 at it (restored afterwards)."""
    with Kinesalite() as server, _environment(server.env()):
        yield server


class _Moto(MotoServer):
    """moto's server mode as a Kinesis server (no resharding: see kinesis_server.py)."""

    def env(self) -> dict[str, str]:
        return {**AWS_ENV, "AWS_ENDPOINT_URL_KINESIS": self.endpoint}

    def client(self) -> Any:
        return super().client("kinesis")


@pytest.fixture(params=["kinesalite", "moto"])
def any_kinesis(request, kinesis):
    """Kinesalite, then moto's server mode (for one test: the environment then points
    at kinesalite again): the reading that needs no resharding."""
    if request.param == "kinesalite":
        yield kinesis
        return
    with _Moto() as server, _environment(server.env()):
        yield server


def _wait_active(client, stream: str) -> None:
    summary = client.describe_stream_summary
    while summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.01)


def _stream(client, shards: int) -> str:
    name = f"s-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=name, ShardCount=shards)
    _wait_active(client, name)
    return name


def _shards(client, stream: str) -> dict[str, dict]:
    return {s["ShardId"]: s for s in client.list_shards(StreamName=stream)["Shards"]}


def _put(client, stream: str, shard: dict, values: list[bytes]) -> list[str]:
    """Put ``values`` into ``shard`` (by its first hash key), in order; their sequence numbers."""
    key = shard["HashKeyRange"]["StartingHashKey"]
    out = []
    for i in range(0, len(values), 500):
        entries = [
            {"Data": value, "PartitionKey": "k", "ExplicitHashKey": key}
            for value in values[i : i + 500]
        ]
        answer = client.put_records(StreamName=stream, Records=entries)
        assert not answer.get("FailedRecordCount")
        assert {r["ShardId"] for r in answer["Records"]} == {shard["ShardId"]}
        out += [r["SequenceNumber"] for r in answer["Records"]]
    return out


def _split(client, stream: str, shard: dict) -> list[str]:
    """Split ``shard`` in two halves; the children's ids."""
    low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    before = set(_shards(client, stream))
    client.split_shard(
        StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2)
    )
    _wait_active(client, stream)
    return sorted(set(_shards(client, stream)) - before)


def _merge(client, stream: str, first: str, second: str) -> str:
    before = set(_shards(client, stream))
    client.merge_shards(StreamName=stream, ShardToMerge=first, AdjacentShardToMerge=second)
    _wait_active(client, stream)
    [child] = set(_shards(client, stream)) - before
    return child


def _csv(rows: np.ndarray) -> list[bytes]:
    return [",".join(repr(v) for v in r).encode() for r in rows.tolist()]


def _rows(rng, n: int, width: int = 3) -> np.ndarray:
    return rng.normal(size=(n, width)).astype(np.float32).astype(np.float64)


def test_bounded_read_blocks_dead_letters_and_positions(any_kinesis, rng):
    client = any_kinesis.client()
    stream = _stream(client, 2)
    shards = list(_shards(client, stream).values())
    rows = [_rows(rng, 100, 4) for _ in shards]
    sequences = {}
    for shard, part in zip(shards, rows, strict=True):
        values = _csv(part)
        values[30] = b"1,2,three,4"
        values[70] = b" "
        sequences[shard["ShardId"]] = _put(client, stream, shard, values)
    read = ReadKinesis(stream, "csv", label_column=-1, block_size=32)
    assert read.n_features == 3
    assert read.start_positions == {s["ShardId"]: "trim_horizon" for s in shards}
    blocks, dead, positions = run_source(read.with_dead_letters().with_positions(), 3)
    assert max(b.n_rows for b in blocks) <= 32
    keep = np.ones(100, dtype=bool)
    keep[[30, 70]] = False
    for shard, part in zip(shards, rows, strict=True):
        source = f"kinesis://{stream}/{shard['ShardId']}"
        features, labels = stack([b for b in blocks if b.origin[0] == source])
        np.testing.assert_array_equal(features, part[keep, :3])
        np.testing.assert_array_equal(labels, part[keep, 3])
    seqs = sequences
    assert sorted((r["file"], r["offset"], r["reason"]) for r in dead) == sorted(
        (f"kinesis://{stream}/{shard}", seqs[shard][i], reason)
        for shard in seqs
        for i, reason in [(30, "field 2 ('three') is not a number"), (70, "empty record value")]
    )
    assert latest_positions(positions, read.start_positions) == {s: q[-1] for s, q in seqs.items()}

    # From those positions: nothing, then exactly the records put since.
    after = latest_positions(positions, read.start_positions)
    assert run_source(ReadKinesis(stream, "csv", positions=after, feature_dim=4)) == [[]]
    more = _rows(rng, 10, 4)
    _put(client, stream, shards[1], _csv(more))
    [blocks] = run_source(ReadKinesis(stream, "csv", positions=after, label_column=-1))
    np.testing.assert_array_equal(stack(blocks)[0], more[:, :3])


def _by_shard(blocks, stream: str) -> dict[str, list[float]]:
    """The first feature of every row, by shard, in the order the blocks came."""
    out: dict[str, list[float]] = {}
    for block in blocks:
        shard = block.origin[0].rsplit("/", 1)[1]
        out.setdefault(shard, []).extend(np.asarray(block.features)[:, 0].tolist())
    return out


def _first_and_last(blocks) -> dict[str, tuple[int, int]]:
    """Where each shard's blocks come in the output: (first index, last index)."""
    seen: dict[str, tuple[int, int]] = {}
    for i, block in enumerate(blocks):
        shard = block.origin[0].rsplit("/", 1)[1]
        seen[shard] = (seen.get(shard, (i, i))[0], i)
    return seen


def _numbered(start: int, n: int) -> list[bytes]:
    """CSV records ``k,0`` for k = start..start+n-1: a record's first field names it."""
    return [f"{k},0".encode() for k in range(start, start + n)]


def test_split_and_merge_read_once_in_order_parents_first(kinesis):
    """Records put before a split, into both children, and after merging them back: a
    bounded read gives each record once, each shard's in order, parents' before
    children's."""
    client = kinesis.client()
    stream = _stream(client, 1)
    [root] = _shards(client, stream).values()
    _put(client, stream, root, _numbered(0, 50))
    left, right = _split(client, stream, root)
    shards = _shards(client, stream)
    _put(client, stream, shards[left], _numbered(100, 40))
    _put(client, stream, shards[right], _numbered(200, 40))
    merged = _merge(client, stream, left, right)
    _put(client, stream, _shards(client, stream)[merged], _numbered(300, 30))

    read = ReadKinesis(stream, "csv", block_size=16).with_positions()
    blocks, positions = run_source(read, 2)
    assert _by_shard(blocks, stream) == {
        root["ShardId"]: list(range(0, 50)),
        left: list(range(100, 140)),
        right: list(range(200, 240)),
        merged: list(range(300, 330)),
    }
    order = _first_and_last(blocks)
    assert order[root["ShardId"]][1] < min(order[left][0], order[right][0])
    assert max(order[left][1], order[right][1]) < order[merged][0]
    reached = latest_positions(positions, read.start_positions)
    assert [reached[s] for s in (root["ShardId"], left, right)] == [DRAINED] * 3
    assert reached[merged].isdigit()


def test_unbounded_read_follows_resharding_while_it_runs(kinesis):
    """A split and a merge while an unbounded read runs: the children are found and
    read after their parents, every record once."""
    client = kinesis.client()
    stream = _stream(client, 1)
    [root] = _shards(client, stream).values()
    _put(client, stream, root, _numbered(0, 30))
    children: list[str] = []

    def reshard() -> None:
        _put(client, stream, root, _numbered(30, 20))
        children.extend(_split(client, stream, root))
        shards = _shards(client, stream)
        _put(client, stream, shards[children[0]], _numbered(100, 25))
        _put(client, stream, shards[children[1]], _numbered(200, 25))
        children.append(_merge(client, stream, *children))
        _put(client, stream, _shards(client, stream)[children[2]], _numbered(300, 25))

    read = ReadKinesis(
        stream, "csv", unbounded=True, stop_after_seconds=6, max_block_seconds=0.3, block_size=16
    )
    timer = threading.Timer(2.0, reshard)
    timer.start()
    try:
        [blocks] = run_source(read)
    finally:
        timer.join()
    left, right, merged = children
    assert _by_shard(blocks, stream) == {
        root["ShardId"]: list(range(0, 50)),
        left: list(range(100, 125)),
        right: list(range(200, 225)),
        merged: list(range(300, 325)),
    }
    order = _first_and_last(blocks)
    assert order[root["ShardId"]][1] < min(order[left][0], order[right][0])
    assert max(order[left][1], order[right][1]) < order[merged][0]


def test_options_and_urls_are_checked(kinesis):
    with pytest.raises(BadInputError, match="does not exist"):
        ReadKinesis("no-such-stream", "csv")
    with pytest.raises(BadInputError, match="give feature_dim"):
        ReadKinesis("x", "libsvm")
    with pytest.raises(BadInputError, match="kinesis://stream"):
        parse_kinesis_url("kinesis://a/b")
    with pytest.raises(BadInputError, match="at_timestamp:MS"):
        parse_kinesis_url("kinesis://a?start=yesterday")
    assert parse_kinesis_url("kinesis://a?start=latest&endpoint=http://h:1&region=r") == {
        "stream": "a",
        "start": "latest",
        "endpoint_url": "http://h:1",
        "region_name": "r",
    }


def test_start_latest_and_at_timestamp(kinesis, rng):
    client = kinesis.client()
    stream = _stream(client, 1)
    [shard] = _shards(client, stream).values()
    old = _rows(rng, 20)
    _put(client, stream, shard, _csv(old))
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    latest = ReadKinesis(stream, "csv", start="latest", feature_dim=3)
    new = _rows(rng, 15)
    _put(client, stream, shard, _csv(new))
    [blocks] = run_source(latest)  # 'latest' is the moment of construction
    np.testing.assert_array_equal(stack(blocks)[0], new)
    url = f"kinesis://{stream}?start=at_timestamp:{middle}&endpoint={kinesis.endpoint}"
    [blocks] = run_source(ReadKinesis.from_url(url, "csv"))
    np.testing.assert_array_equal(stack(blocks)[0], new)


def _cli(capsys, *args) -> dict:
    """The beam-ml command, in this process; its summary line."""
    from beam_ml.cli.main import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_trains_and_resumes_after_the_stored_sequence_numbers(kinesis, tmp_path, rng, capsys):
    """beam-ml train stores the sequence numbers its read reached; --resume reads what
    came since (a split meanwhile), each record once."""
    client = kinesis.client()
    stream = _stream(client, 2)
    shards = list(_shards(client, stream).values())
    first = [_rows(rng, 150), _rows(rng, 120)]
    for shard, part in zip(shards, first, strict=True):
        _put(client, stream, shard, _csv(part))
    url = f"kinesis://{stream}?endpoint={kinesis.endpoint}"
    base = ["train", "pca", "--input", url, "--format", "csv", "--num_components", 2]
    _cli(capsys, *base, "--output", tmp_path / "a")
    state, manifest = read_checkpoint(str(tmp_path / "a"))
    reference = PCAState(PCAConfig(num_components=2)).update(np.vstack(first))
    assert state.n_seen == 270
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    stored = manifest["extra"]["source_positions"]
    assert set(stored) == {s["ShardId"] for s in shards}

    children = _split(client, stream, shards[0])
    later = [_rows(rng, 40), _rows(rng, 30), _rows(rng, 20)]
    _put(client, stream, shards[1], _csv(later[0]))
    for child, part in zip(children, later[1:], strict=True):
        _put(client, stream, _shards(client, stream)[child], _csv(part))
    assert (
        _cli(capsys, *base, "--output", tmp_path / "b", "--resume", tmp_path / "a")["rows_read"]
        == 90
    )
    state, manifest = read_checkpoint(str(tmp_path / "b"))
    reference.update(np.vstack(later))
    assert state.n_seen == 360
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-9, atol=1e-9)
    assert manifest["extra"]["source_positions"][shards[0]["ShardId"]] == DRAINED
    assert set(manifest["extra"]["source_positions"]) == {s["ShardId"] for s in shards} | set(
        children
    )


def _trainer(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "beam_ml.cli", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def _snapshot(path) -> int:
    try:
        return int(read_manifest(str(path))["extra"]["snapshot"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def test_continuous_training_kill_9_and_restart_loses_and_repeats_nothing(kinesis, tmp_path, rng):
    """--streaming from Kinesis while records arrive and a shard splits: killed with
    SIGKILL mid-stream, restarted from the checkpointed sequence numbers, it ends with
    the state of one pass over every record, and a model snapshot."""
    client = kinesis.client()
    stream = _stream(client, 2)
    shards = list(_shards(client, stream).values())
    rows = _rows(rng, 3_000) @ np.diag([3.0, 1.0, 0.2])
    rows = rows.astype(np.float32).astype(np.float64)
    waves = np.array_split(rows, 20)
    error: list[BaseException] = []
    bad: list[str] = []  # the sequence number of a bad record
    state_dir = tmp_path / "state"

    def produce() -> None:
        try:
            targets = shards
            bad.extend(_put(client, stream, shards[1], [b"1,2,x"]))
            for i, wave in enumerate(waves):
                if i == 4:  # the rest once the trainer is at work (it takes seconds to start)
                    deadline = time.monotonic() + 60
                    while _snapshot(state_dir) < 1 and time.monotonic() < deadline:
                        time.sleep(0.05)
                if i == 10:  # split the first shard mid-stream
                    children = _split(client, stream, shards[0])
                    now = _shards(client, stream)
                    targets = [now[children[0]], now[children[1]], shards[1]]
                for j, part in enumerate(np.array_split(wave, len(targets))):
                    _put(client, stream, targets[j], _csv(part))
                time.sleep(0.25)
        except BaseException as exc:  # reported by the test
            error.append(exc)

    url = f"kinesis://{stream}"  # the endpoint from AWS_ENDPOINT_URL_KINESIS
    command = ["pca", "--num_components", 2, "--input", url, "--format", "csv",
               "--output", state_dir, "--streaming"]  # fmt: skip
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    first = _trainer(*command, "--snapshot_every", "200ms")
    try:
        deadline = time.monotonic() + 60
        while _snapshot(state_dir) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = read_manifest(str(state_dir))["n_seen"]
    assert 0 < killed_at < len(rows), "kill earlier: the test needs a partial state"

    second = _trainer(*command, "--snapshot_every", "500ms", "--stop_when_idle", "2s")
    producer.join(60)
    assert not error and not producer.is_alive()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == len(rows), (summary, killed_at)
    assert summary["rows_read"] == len(rows) - killed_at
    state, manifest = read_checkpoint(str(state_dir))
    reference = PCAState(PCAConfig(num_components=2, feature_dim=3)).update(rows)
    np.testing.assert_allclose(state.mean, reference.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-10, atol=1e-9)
    positions = manifest["extra"]["source_positions"]
    assert positions[shards[0]["ShardId"]] == DRAINED and len(positions) == 4
    [dead] = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert dead["file"] == f"kinesis://{stream}/{shards[1]['ShardId']}"
    assert (dead["offset"], dead["record"]) == (bad[0], "1,2,x")
    model = read_manifest(str(state_dir) + ".model")
    assert model["extra"]["snapshot"] == manifest["extra"]["snapshot"]
    assert model["extra"]["n_seen"] == len(rows)
