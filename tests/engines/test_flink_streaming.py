"""Continuous training as one streaming pipeline on the Flink cluster (issue 17):
ReadKafka(unbounded=True) -> TrainStreaming -> WriteCheckpoint with Flink checkpointing
on, and a TaskManager killed mid-stream.

The pipeline reads a 2-partition topic of the Kafka 4 broker while the test produces
into it, at parallelism 2 with the SDK workers in the EXTERNAL worker pool. Once a
snapshot is out and a Flink checkpoint holds state, the test kills (SIGKILL) the
TaskManager whose subtask holds the model's state, starts a replacement, and produces
the rest of the records. Flink restores the last checkpoint (the reader's offsets, as the
SDF's residual restrictions, and the model's combining state, together) and goes on.
No record may be lost or counted twice: the last snapshot has seen every record exactly
once (n_seen, and the PCA statistics equal to a DirectRunner training on the same
records, to the exact family's tolerance), and the consumer group's committed offsets
(``commit_offsets``: committed when Flink's checkpoint completes) are the log's end.

Flink options the stream needs on Beam 2.62's job server (deploy/flink/README.md):
``--finish_bundle_before_checkpointing``: otherwise a bundle open at a checkpoint is
finished inside the snapshot and its output kept in operator state until the operator's
next bundle or watermark; the stages between Impulse and the Kafka reader see one element
and the final watermark, never another, so the partitions they carry were never read.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
import uuid

import apache_beam as beam
import numpy as np
import pytest

from beam_ml import PCAConfig, Train, WriteCheckpoint, pipeline_options, read_checkpoint
from beam_ml.io.kafka import ReadKafka
from beam_ml.transforms.stream import TrainStreaming
from tests.contract.cases import _pca_exact_equal
from tests.engines.conftest import REST, rest, start_taskmanager, taskmanager_pid
from tests.streaming.kafka_broker import API_VERSION

pytestmark = [pytest.mark.engines, pytest.mark.beam, pytest.mark.slow, pytest.mark.streaming]

PARTITIONS, WAVES, WAVE_ROWS = 2, 24, 100  # rows per partition and wave
STREAMING = [
    "--streaming",
    "--checkpointing_interval=1000",
    "--finish_bundle_before_checkpointing",
    # a restart strategy: the first attempts can land on the dead TaskManager's slots
    # before Flink has noticed it is gone
    "--number_of_execution_retries=20",
    "--execution_retry_delay=1000",
]
TIMEOUT_S = 150  # each wait below; the whole test takes ~60-100 s on 2 loaded cores


@pytest.fixture(scope="module")
def kafka_broker():
    from tests.streaming.kafka_broker import KafkaBroker

    with KafkaBroker() as broker:
        yield broker


def _wait(what: str, condition, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _running_job(name: str) -> str | None:
    jobs = [j for j in rest("/jobs/overview")["jobs"] if j["name"] == name]
    return jobs[0]["jid"] if jobs and jobs[0]["state"] == "RUNNING" else None


def _cancel(name: str) -> None:
    for job in rest("/jobs/overview")["jobs"]:
        if job["name"] == name and job["state"] not in ("CANCELED", "FINISHED", "FAILED"):
            request = urllib.request.Request(
                f"{REST}/jobs/{job['jid']}?mode=cancel", method="PATCH"
            )
            urllib.request.urlopen(request, timeout=30).close()


def _state_holder(jid: str) -> str | None:
    """The TaskManager running the subtask of the TrainStreaming stage that got blocks."""
    for vertex in rest(f"/jobs/{jid}")["vertices"]:
        if "TrainStreaming" in vertex["name"] and "WriteCheckpoint" in vertex["name"]:
            subtasks = rest(f"/jobs/{jid}/vertices/{vertex['id']}")["subtasks"]
            busy = [s["taskmanager-id"] for s in subtasks if s["metrics"]["read-records"] > 0]
            return busy[0] if busy else None
    return None


def _n_seen(path) -> int:
    return read_checkpoint(str(path))[0].n_seen if (path / "manifest.json").exists() else 0


def _committed(broker, topic: str, group: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id=group, api_version=API_VERSION,
        enable_auto_commit=False,
    )  # fmt: skip
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_streaming_training_survives_a_killed_taskmanager(flink_cluster, kafka_broker, tmp_path):
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    rows = np.random.default_rng(17).normal(size=(WAVES, PARTITIONS, WAVE_ROWS, 3))
    total = rows[..., 0].size

    def produce(wave: int) -> None:
        for p in range(PARTITIONS):
            values = [",".join(repr(v) for v in row).encode() for row in rows[wave, p].tolist()]
            kafka_broker.produce(topic, values, partition=p)

    killed = threading.Event()

    def producer() -> None:
        """Half the waves until the kill, the other half after it (0.25 s apart)."""
        for wave in range(1, WAVES):
            if wave == WAVES // 2:
                killed.wait(TIMEOUT_S * 2)
            produce(wave)
            time.sleep(0.25)

    produce(0)
    snapshots = tmp_path / "snapshots"
    read = ReadKafka(
        kafka_broker.bootstrap_servers, topic, "csv", api_version=API_VERSION,
        unbounded=True, max_block_seconds=0.5, block_size=WAVE_ROWS,
        consumer_config={"group_id": group}, commit_offsets=True,
    )  # fmt: skip
    name = f"beam-ml-engines-stream-{uuid.uuid4().hex[:8]}"
    pipeline = beam.Pipeline(
        options=pipeline_options([*flink_cluster, *STREAMING, f"--job_name={name}"])
    )
    _ = (
        pipeline
        | read
        | TrainStreaming(PCAConfig(2), snapshot_every_seconds=1.0)
        | WriteCheckpoint(str(snapshots), keep=1000)
    )
    pipeline.run()  # returns once submitted: the job runs until cancelled
    feeding = threading.Thread(target=producer, daemon=True)
    feeding.start()
    try:
        jid = _wait("the Flink job to run", lambda: _running_job(name))
        _wait("the first snapshot", lambda: _n_seen(snapshots))
        completed = rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"]
        _wait(
            "a Flink checkpoint after the first snapshot",
            lambda: rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"] > completed,
        )
        victim = _wait("metrics of the subtask holding the state", lambda: _state_holder(jid))
        seen_before_kill = _n_seen(snapshots)
        os.kill(taskmanager_pid(victim), signal.SIGKILL)
        start_taskmanager()  # the cluster gets its second TaskManager back
        killed.set()
        assert seen_before_kill < total, "the kill must come mid-stream"

        _wait(
            "Flink to restore the job from a checkpoint",
            lambda: rest(f"/jobs/{jid}/checkpoints")["counts"]["restored"] >= 1,
        )
        _wait("a snapshot with every record", lambda: _n_seen(snapshots) >= total)
        end = {p: (WAVES * WAVE_ROWS) for p in range(PARTITIONS)}
        _wait(
            "the committed offsets to reach the log's end",
            lambda: _committed(kafka_broker, topic, group) == end,
        )
        time.sleep(3)  # a replayed record would now show in a later snapshot
        exceptions = rest(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]
    finally:
        killed.set()
        _cancel(name)
        feeding.join(timeout=60)

    assert exceptions, "Flink recorded no failure: was the TaskManager killed?"
    state, manifest = read_checkpoint(str(snapshots))
    assert state.n_seen == total
    # every snapshot ever written: none counted a record twice (after the restore the
    # stream went on from the checkpoint, not from the killed TaskManager's later state)
    assert max(h["n_seen"] for h in manifest["history"]) == total

    with beam.Pipeline(options=pipeline_options()) as local:
        bounded = ReadKafka(kafka_broker.bootstrap_servers, topic, "csv", api_version=API_VERSION)
        _ = local | bounded | Train(PCAConfig(2)) | WriteCheckpoint(str(tmp_path / "local"))
    reference, _ = read_checkpoint(str(tmp_path / "local"))
    assert reference.n_seen == total
    _pca_exact_equal(reference, state)
