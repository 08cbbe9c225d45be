"""Continuous training (`beam-ml train ... --streaming`): snapshots while records arrive,
models published, and a kill -9 mid-stream costs nothing: the restarted trainer ends
with the state of one uninterrupted pass over the same records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from beam_ml import LinearLearnerState, PCAConfig, PCAState, read_checkpoint
from beam_ml.core.block import Block
from beam_ml.io.checkpoints import read_manifest
from tests.conftest import REPO

pytestmark = [pytest.mark.streaming, pytest.mark.slow]

PARTITIONS = 3


def _trainer(*args, stdin=None, tmpdir=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    if tmpdir is not None:  # where the trainer's temporary files go
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen(
        [sys.executable, "-m", "beam_ml.cli", "train", *map(str, args)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


def _snapshot(path: Path) -> int:
    try:
        return int(read_manifest(str(path))["extra"]["snapshot"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _csv(rows: np.ndarray) -> list[bytes]:
    return [",".join(repr(v) for v in r).encode() for r in rows.tolist()]


class _Producer(threading.Thread):
    """Sends ``rows`` (batches, PARTITIONS at a time) to ``topic`` over a few seconds."""

    def __init__(self, cluster, topic, rows, batches: int, pause: float, partitions=PARTITIONS):
        super().__init__(daemon=True)
        self.cluster, self.topic, self.rows, self.partitions = cluster, topic, rows, partitions
        self.batches, self.pause = batches, pause
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            per_partition = np.array_split(self.rows, self.partitions)
            for b in range(self.batches):
                for p, rows in enumerate(per_partition):
                    chunk = np.array_split(rows, self.batches)[b]
                    self.cluster.produce(self.topic, _csv(chunk), partition=p)
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc


CASES = {
    "pca": (["pca", "--num_components", 2], 4),
    "linear_learner": (
        ["linear_learner", "--predictor_type", "regressor", "--loss", "squared_loss",
         "--label_column", 4, "--num_models", 2],
        5,
    ),
}  # fmt: skip


@pytest.mark.parametrize("algorithm", sorted(CASES))
def test_kill_9_mid_stream_then_restart_equals_one_uninterrupted_pass(
    kafka_cluster, tmp_path, rng, algorithm
):
    args, width = CASES[algorithm]
    topic = f"continuous-{algorithm}"
    kafka_cluster.create_topic(topic, partitions=PARTITIONS)
    rows = rng.normal(size=(6_000, width)) @ rng.normal(size=(width, width))
    rows = rows.astype(np.float32).astype(np.float64)  # exactly what the CSV carries
    url = f"kafka://{kafka_cluster.bootstrap_servers}/{topic}?api_version=2.3"
    state_dir = tmp_path / "state"
    command = [*args, "--input", url, "--format", "csv", "--output", state_dir, "--streaming"]
    # ~9 s of production: the trainer starts (imports, ~3 s) and is killed well before the end.
    producer = _Producer(kafka_cluster, topic, rows, batches=60, pause=0.15)
    producer.start()
    first = _trainer(*command, "--snapshot_every", "200ms")
    try:
        _wait_for(lambda: _snapshot(state_dir) >= 2, 90, "two snapshots")
        time.sleep(0.1 + 0.3 * rng.random())  # anywhere in a cycle
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = read_manifest(str(state_dir))
    assert first.returncode == -signal.SIGKILL
    assert 0 < killed_at["n_seen"] < len(rows), "kill earlier: the test needs a partial state"

    second = _trainer(*command, "--snapshot_every", "500ms", "--stop_when_idle", "4s")
    producer.join(60)
    assert producer.error is None and not producer.is_alive()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    assert "continuing" in err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == len(rows), (summary, killed_at["n_seen"])
    assert summary["rows_read"] == len(rows) - killed_at["n_seen"]

    state, manifest = read_checkpoint(str(state_dir))
    expected_positions = {f"{topic}:{p}": len(part) for p, part in
                          enumerate(np.array_split(rows, PARTITIONS))}  # fmt: skip
    assert manifest["extra"]["source_positions"] == expected_positions
    # Exactly one uninterrupted pass's statistics (float64 sums in another order).
    if algorithm == "pca":
        reference = PCAState(PCAConfig(num_components=2, feature_dim=width)).update(rows)
        assert state.n_seen == reference.n_seen
        np.testing.assert_allclose(state.mean, reference.mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-10, atol=1e-9)
    else:
        reference = LinearLearnerState(state.config).update(Block(rows[:, :4], rows[:, 4].copy()))
        assert state.n_seen == reference.n_seen
        np.testing.assert_allclose(state.exact_mean, reference.exact_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            state.exact_scatter, reference.exact_scatter, rtol=1e-10, atol=1e-9
        )
    # The model of the last snapshot was published beside the state.
    model_manifest = read_manifest(str(state_dir) + ".model")
    assert model_manifest["extra"]["snapshot"] == manifest["extra"]["snapshot"]
    assert model_manifest["extra"]["n_seen"] == len(rows)


def test_models_are_announced_on_a_topic_and_the_last_k_snapshots_kept(
    kafka_cluster, tmp_path, rng
):
    from kafka import KafkaConsumer, TopicPartition

    topic, announcements = "continuous-announced", "models"
    kafka_cluster.create_topic(topic, partitions=1)
    kafka_cluster.create_topic(announcements, partitions=1)
    rows = rng.normal(size=(900, 3))
    servers = kafka_cluster.bootstrap_servers
    trainer = _trainer(
        "kmeans", "--k", 3, "--input", f"kafka://{servers}/{topic}?api_version=2.3",
        "--format", "csv", "--output", tmp_path / "state", "--streaming",
        "--snapshot_every", "300ms", "--keep", 3, "--stop_when_idle", "3s",
        "--publish", f"kafka://{servers}/{announcements}?api_version=2.3",
    )  # fmt: skip
    for i, part in enumerate(np.array_split(rows, 4)):  # a part per snapshot, at least
        kafka_cluster.produce(topic, _csv(part))
        _wait_for(lambda i=i: _snapshot(tmp_path / "state") > i, 60, f"snapshot {i + 1}")
    out, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 900 and summary["snapshots"] >= 3

    consumer = KafkaConsumer(bootstrap_servers=servers, api_version=(2, 3), group_id=None)
    tp = TopicPartition(announcements, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    messages = []
    deadline = time.monotonic() + 20
    while len(messages) < summary["snapshots"] and time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=200).get(tp, []):
            messages.append(json.loads(record.value))
    consumer.close()
    assert [m["snapshot"] for m in messages] == list(range(1, summary["snapshots"] + 1))
    assert messages[-1]["n_seen"] == 900 and messages[-1]["model"].endswith("state.model")
    n_seen = [m["n_seen"] for m in messages]
    assert n_seen == sorted(n_seen) and n_seen[0] < 900  # models followed the stream
    manifest = read_manifest(str(tmp_path / "state"))
    assert len(manifest["history"]) == 3
    older, _ = read_checkpoint(str(tmp_path / "state"), payload=manifest["history"][2]["payload"])
    assert older.n_seen == messages[-3]["n_seen"]


def test_an_endless_pipe_publishes_models_before_it_ends(tmp_path, rng):
    """`tail -F log.csv | beam-ml train ... --input - --streaming`: models while the
    pipe is open; malformed lines named by their line in the pipe."""
    rows = rng.normal(size=(2_000, 4)).astype(np.float32).astype(np.float64)
    trainer = _trainer(
        "pca", "--num_components", 2, "--input", "-", "--format", "csv",
        "--output", tmp_path / "state", "--streaming", "--snapshot_every", "200ms",
        stdin=subprocess.PIPE,
    )  # fmt: skip
    lines = [b"a,b,c,d\n"] + [line + b"\n" for line in _csv(rows)]
    lines.insert(1001, b"1,2,oops,4\n")  # line 1002 of the pipe
    trainer.stdin.write(b"".join(lines[:1001]))
    trainer.stdin.flush()

    def model_rows() -> int:
        try:
            return read_manifest(str(tmp_path / "state.model"))["extra"]["n_seen"]
        except FileNotFoundError:
            return 0

    _wait_for(lambda: model_rows() == 1000, 60, "a model of the first 1,000 rows, pipe open")
    # The rest, then the end of the pipe, which ends the run.
    out, err = trainer.communicate(b"".join(lines[1001:]), timeout=60)
    assert trainer.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 2_000 and summary["bad_records"] == 1
    state, manifest = read_checkpoint(str(tmp_path / "state"))
    reference = PCAState(PCAConfig(num_components=2, feature_dim=4)).update(rows)
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-10, atol=1e-9)
    assert manifest["extra"]["source_positions"] == {"lines": 2_002}
    dead = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert [(d["file"], d["line"], d["record"]) for d in dead] == [("<stdin>", 1002, "1,2,oops,4")]
    assert dead[0]["offset"] == len(b"".join(lines[:1001]))


def _spills(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("beam_ml_"))


def test_bad_lines_in_a_pipe_are_dead_letters_and_the_training_goes_on(tmp_path, rng):
    """A pipe with a 0x1E byte, a bare CR inside a line and a label of 2 for a binary
    classifier: each line is a dead letter naming its line and reason, the rest trains,
    snapshots follow, the end of the pipe ends the run (0), no spill file is left."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    rows = rng.normal(size=(600, 3)).astype(np.float32).astype(np.float64)
    labels = (rows[:, 0] > 0).astype(np.float64)
    lines = [line + b"\n" for line in _csv(np.column_stack([rows, labels]))]
    bad = {  # pipe line -> its text: line numbers after the insertions
        101: b"0.5,1\x1e,2,1",
        202: b"0.5,1\r2,3,0",
        303: b"0.5,1,2,2",  # the state refuses it, not the decoder
        454: b"0.25,0.5,1,2",  # in the second part: after the first snapshot
    }
    for line, text in sorted(bad.items()):
        lines.insert(line - 1, text + b"\n")
    state = tmp_path / "state"
    trainer = _trainer(
        "linear_learner", "--predictor_type", "binary_classifier", "--label_column", 3,
        "--input", "-", "--format", "csv", "--output", state, "--streaming",
        "--snapshot_every", "200ms", stdin=subprocess.PIPE, tmpdir=tmpdir,
    )  # fmt: skip
    trainer.stdin.write(b"".join(lines[:400]))
    trainer.stdin.flush()
    try:
        _wait_for(lambda: _snapshot(state) >= 1 or trainer.poll() is not None, 60, "a snapshot")
    except AssertionError:
        trainer.send_signal(signal.SIGABRT)
        trainer.wait()
        raise AssertionError(trainer.stderr.read().decode()) from None
    assert trainer.poll() is None, trainer.stderr.read().decode()
    out, err = trainer.communicate(b"".join(lines[400:]), timeout=60)
    assert trainer.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 600 and summary["bad_records"] == 4, summary
    assert summary["snapshots"] >= 2
    dead = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert [d["line"] for d in sorted(dead, key=lambda d: d["line"])] == sorted(bad)
    for d in dead:
        assert d["file"] == "<stdin>" and d["record"] == bad[d["line"]].decode()
        assert d["offset"] == len(b"".join(lines[: d["line"] - 1])), d
    reasons = {d["line"]: d["reason"] for d in dead}
    assert "not a number" in reasons[101] and "carriage return" in reasons[202]
    assert "refused by the linear_learner state" in reasons[303] and "2.0" in reasons[303]
    assert "refused" in err.decode() and "Fatal Python error" not in err.decode()
    assert read_checkpoint(str(state))[0].n_seen == 600
    assert _spills(tmpdir) == [] and not (tmp_path / "state.pipe_read.json").exists()


def test_a_pipe_error_exits_cleanly_while_the_pipe_is_still_open(tmp_path, rng):
    """An error (here: an output that cannot be written) while the reading thread waits
    on an open pipe: a one-line error and status 1, not an abort on the stdin lock."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    trainer = _trainer(
        "pca", "--num_components", 2, "--input", "-", "--format", "csv",
        "--output", "/proc/no/such/dir", "--streaming", "--snapshot_every", "200ms",
        stdin=subprocess.PIPE, tmpdir=tmpdir,
    )  # fmt: skip
    trainer.stdin.write(b"".join(line + b"\n" for line in _csv(rng.normal(size=(50, 3)))))
    trainer.stdin.flush()  # and the pipe stays open
    try:
        returncode = trainer.wait(timeout=60)
    finally:
        trainer.kill()
        trainer.stdin.close()
    err = trainer.stderr.read().decode()
    assert returncode == 1, err
    assert "Fatal Python error" not in err and "beam-ml: error:" in err
    assert _spills(tmpdir) == []


def test_kill_9_on_a_pipe_then_restart_reports_the_lost_lines(tmp_path, rng):
    """Lines read after the last snapshot die with a killed trainer: the restart says
    how many, and removes the killed run's spill files."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    rows = rng.normal(size=(330, 3)).astype(np.float32).astype(np.float64)
    lines = [line + b"\n" for line in _csv(rows)]
    state, sidecar = tmp_path / "state", tmp_path / "state.pipe_read.json"
    command = [
        "pca", "--num_components", 2, "--input", "-", "--format", "csv", "--output", state,
        "--streaming", "--snapshot_every", "10m", "--snapshot_every_rows", 1_000,
    ]  # fmt: skip
    first = _trainer(*command, stdin=subprocess.PIPE, tmpdir=tmpdir)

    def lines_read() -> int:
        try:
            return json.loads(sidecar.read_text())["lines_read"]
        except (FileNotFoundError, ValueError, KeyError):
            return -1

    try:
        first.stdin.write(b"".join(lines[:200]))
        first.stdin.flush()
        _wait_for(lambda: _snapshot(state) == 1, 60, "the first snapshot")
        # The next cycle is 10 minutes (or 1,000 lines) away: these 100 lines are read, not kept.
        first.stdin.write(b"".join(lines[200:300]))
        first.stdin.flush()
        _wait_for(lambda: lines_read() == 300, 30, "the 300 lines read")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    kept = read_manifest(str(state))["extra"]["source_positions"]["lines"]
    assert 0 < kept < 300 and any(n.startswith("beam_ml_pipe_") for n in _spills(tmpdir))

    second = _trainer(*command, stdin=subprocess.PIPE, tmpdir=tmpdir)
    out, err = second.communicate(b"".join(lines[300:]), timeout=60)
    assert second.returncode == 0, err.decode()
    message = (
        f"{300 - kept:,} lines an earlier run read from its pipe after that snapshot were lost"
    )
    assert message in err.decode() and f"(lines {kept + 1:,} to 300;" in err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == kept + 30
    assert _spills(tmpdir) == [] and not sidecar.exists()


def test_kafka_records_a_state_refuses_are_dead_letters(kafka_cluster, tmp_path, rng):
    """A label of 2 for a binary classifier, found by the state's update: that record
    (its partition and offset) is set aside, the others train, the positions move on."""
    topic = "continuous-refused"
    kafka_cluster.create_topic(topic, partitions=1)
    rows = rng.normal(size=(400, 3)).astype(np.float32).astype(np.float64)
    records = _csv(np.column_stack([rows, (rows[:, 0] > 0).astype(np.float64)]))
    records.insert(123, b"0.5,1,2,2")  # offset 123
    kafka_cluster.produce(topic, records)
    trainer = _trainer(
        "linear_learner", "--predictor_type", "binary_classifier", "--label_column", 3,
        "--input", f"kafka://{kafka_cluster.bootstrap_servers}/{topic}?api_version=2.3",
        "--format", "csv", "--output", tmp_path / "state", "--streaming",
        "--snapshot_every", "200ms", "--stop_when_idle", "2s", tmpdir=tmp_path,
    )  # fmt: skip
    out, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["n_seen"] == 400 and summary["bad_records"] == 1, summary
    [dead] = [json.loads(line) for line in (tmp_path / "state.dead_letters.jsonl").open()]
    assert dead["offset"] == 123 and dead["record"] == "0.5,1,2,2" and topic in dead["file"]
    assert "refused by the linear_learner state" in dead["reason"]
    assert read_manifest(str(tmp_path / "state"))["extra"]["source_positions"] == {
        f"{topic}:0": 401
    }
    assert _spills(tmp_path) == []


def test_pubsub_kill_9_then_restart_loses_and_repeats_nothing(pubsub_server, tmp_path, rng):
    """Messages are acknowledged only after the checkpoint that holds them: those a
    killed trainer pulled come back after their lease and are trained once."""
    from google.cloud import pubsub_v1

    subscription = pubsub_server.create_subscription("continuous", "rows", ack_deadline=10)
    rows = rng.normal(size=(3_000, 3)).astype(np.float32).astype(np.float64)
    publisher = pubsub_v1.PublisherClient()
    topic = pubsub_server.topic_path("rows")

    def publish(part):
        futures = [publisher.publish(topic, line) for line in _csv(part)]
        for future in futures:
            future.result(timeout=30)

    publish(rows[:1_000])
    command = [
        "pca", "--num_components", 2, "--input", f"pubsub://{subscription}", "--format", "csv",
        "--output", tmp_path / "state", "--streaming", "--snapshot_every", "200ms",
    ]  # fmt: skip
    first = _trainer(*command)
    try:
        _wait_for(lambda: _snapshot(tmp_path / "state") >= 1, 60, "a first snapshot")
        publish(rows[1_000:2_000])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = read_manifest(str(tmp_path / "state"))["n_seen"]
    publish(rows[2_000:])
    second = _trainer(*command)
    try:
        # Messages the killed trainer held come back when its lease (10.6 s) ends.
        _wait_for(
            lambda: (
                pubsub_server.backlog(subscription) == 0
                and read_manifest(str(tmp_path / "state"))["n_seen"] >= len(rows)
            ),
            90,
            "every message trained and acknowledged",
        )
    finally:
        second.send_signal(signal.SIGTERM)  # finishes its cycle, then exits
        out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()
    assert 0 < killed_at < len(rows)
    state, _ = read_checkpoint(str(tmp_path / "state"))
    assert state.n_seen == len(rows)  # none lost, none twice
    reference = PCAState(PCAConfig(num_components=2, feature_dim=3)).update(rows)
    np.testing.assert_allclose(state.scatter, reference.scatter, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--input", "data.csv"], "--streaming reads kafka://"),
        (["--input", "-"], "needs --format"),
        (["--input", "-", "--format", "csv", "--strict"], "no --query nor --strict"),
        (["--input", "-", "--format", "csv", "--snapshot_every", "soon"], "a duration"),
    ],
)
def test_streaming_usage_errors_are_one_line(tmp_path, extra, message):
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli", "train", "pca", "--num_components", "2",
         "--output", str(tmp_path / "s"), "--streaming", *extra],
        capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr.decode(), done.stderr.decode()
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_models_are_announced_on_pubsub(pubsub_server, tmp_path, rng):
    from beam_ml.io.pubsub import PubSubPuller

    subscription = pubsub_server.create_subscription("model-news", "models", ack_deadline=10)
    rows = rng.normal(size=(600, 3))
    trainer = _trainer(
        "pca", "--num_components", 2, "--input", "-", "--format", "csv",
        "--output", tmp_path / "state", "--streaming", "--snapshot_every", "200ms",
        "--publish", f"pubsub://{pubsub_server.topic_path('models')}",
        stdin=subprocess.PIPE,
    )  # fmt: skip
    for i, part in enumerate(np.array_split(rows, 3)):  # a part per snapshot, at least
        trainer.stdin.write(b"".join(line + b"\n" for line in _csv(part)))
        trainer.stdin.flush()
        _wait_for(lambda i=i: _snapshot(tmp_path / "state") > i, 60, f"snapshot {i + 1}")
    out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == 0, err.decode()
    snapshots = json.loads(out.decode().strip().splitlines()[-1])["snapshots"]
    with PubSubPuller(subscription) as puller:
        messages = puller.pull(100, timeout=5)
        puller.ack([m.ack_id for m in messages])
    news = sorted((json.loads(m.data) for m in messages), key=lambda m: m["snapshot"])
    assert [m["snapshot"] for m in news] == list(range(1, snapshots + 1)) and snapshots >= 2
    assert news[-1]["n_seen"] == 600 and news[-1]["model"].endswith("state.model")


def test_snapshot_every_rows_starts_a_cycle_before_the_interval(kafka_cluster, tmp_path, rng):
    topic = "continuous-rows-trigger"
    kafka_cluster.create_topic(topic, partitions=1)
    kafka_cluster.produce(topic, _csv(rng.normal(size=(300, 3))))
    trainer = _trainer(
        "pca", "--num_components", 2, "--format", "csv", "--output", tmp_path / "state",
        "--input", f"kafka://{kafka_cluster.bootstrap_servers}/{topic}?api_version=2.3",
        "--streaming", "--snapshot_every", "10m", "--snapshot_every_rows", 500,
    )  # fmt: skip
    try:
        _wait_for(lambda: _snapshot(tmp_path / "state") == 1, 60, "the first snapshot")
        kafka_cluster.produce(topic, _csv(rng.normal(size=(400, 3))))
        time.sleep(3)
        assert _snapshot(tmp_path / "state") == 1  # 400 rows wait: fewer than 500
        sent = time.monotonic()
        kafka_cluster.produce(topic, _csv(rng.normal(size=(200, 3))))
        _wait_for(lambda: _snapshot(tmp_path / "state") == 2, 30, "a snapshot by rows")
        assert time.monotonic() - sent < 10  # not the 10-minute interval
    finally:
        trainer.send_signal(signal.SIGTERM)
        out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1])["n_seen"] == 900
