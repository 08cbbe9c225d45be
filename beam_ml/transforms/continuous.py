"""Continuous training: one state follows a stream, snapshotted every few seconds.

:class:`ContinuousTrainer` runs *cycles*. A feed gathers what arrived past the
positions stored in the last checkpoint; a cycle is one bounded Beam pipeline that
decodes it into blocks, trains on from that checkpoint (``Train(resume_from=...)``:
statistics states merge, SGD states continue), and writes the new state *and* the new
source positions in one atomic checkpoint (keeping the last K). Then the model is
derived from the state, written atomically, and announced (optionally on a Kafka or
Pub/Sub topic).

Why cycles of bounded pipelines rather than one endless streaming pipeline:

- state and positions commit together, so a crash at any moment (``kill -9``
  included) loses nothing and counts nothing twice: a restart reads the last
  checkpoint and goes on from its positions;
- the Python DirectRunner cannot keep an endless splittable-DoFn source running while
  a later stage emits (its portable runner runs stages one after another).

On a runner with durable streaming of its own (Flink, Dataflow), ``TrainStreaming``
over an unbounded source is the one-pipeline alternative. A cycle adds Beam's fixed
start-up (a few tenths of a second) to the work, so snapshots every few seconds are
practical; a record is in a published model at most one interval plus one cycle
after it arrives (BENCHMARKS.md measures it).

Bad records never stop the stream. Those the decoder cannot read are dead letters of
the cycle's pipeline; those the state's update refuses (a label of 2 for a binary
classifier) fail the pipeline, so the trainer finds them (a fresh state's update of
the cycle's records, halving the blocks it refuses down to single rows), sets them
aside as dead letters naming the reason, and runs the cycle again without them.

Feeds (where cycles read from; each holds at most a configured number of records)
live beside their readers in :mod:`beam_ml.io`; their base is
:class:`~beam_ml.io.feeds.Feed`:

- :class:`~beam_ml.io.kafka.KafkaFeed`: a background consumer fetches records as they
  arrive; positions are the next offset of every partition.
- :class:`~beam_ml.io.pipes.PipeFeed`: a background thread reads lines from a pipe
  (``tail -F``) into a bounded queue (a full queue stops reading: back-pressure, not
  memory growth). A pipe cannot be replayed: on a crash, the lines read but not yet
  checkpointed are lost (the checkpoint says how many were kept, a sidecar file how
  many were read: the restart reports the difference).
- :class:`~beam_ml.io.pubsub.PubSubFeed`: pulls messages and acknowledges them only
  after the checkpoint that includes them is written; the checkpoint also names the
  recent message ids, so a message redelivered after a crash between the checkpoint
  and the ack is acknowledged and skipped, not counted twice.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from beam_ml.core.errors import BadInputError, NotEnoughDataError
from beam_ml.core.state import config_from_dict, state_class_for
from beam_ml.io.feeds import Feed, Take
from beam_ml.io.kafka import KafkaFeed
from beam_ml.io.pipes import PipeFeed, pipeline_in
from beam_ml.io.pubsub import PubSubFeed
from beam_ml.io.scratch import temp_dir

__all__ = ["ContinuousTrainer", "Feed", "KafkaFeed", "PipeFeed", "PubSubFeed", "Take"]

_log = logging.getLogger("beam_ml.continuous")


# --------------------------------------------------------------------------- the loop
@dataclass
class Snapshot:
    """One cycle's outcome (also logged and announced)."""

    snapshot: int
    rows: int
    bad_records: int
    n_seen: int
    seconds: float
    positions: dict[str, Any]
    model: str | None


class _WriteLines(beam.DoFn):
    """Each bundle's records as one JSON-lines file in ``directory`` (lighter than
    ``WriteToText``, whose extra stages cost a cycle ~0.15 s); the driver joins them."""

    def __init__(self, directory: str):
        self._directory = directory

    def start_bundle(self) -> None:
        self._lines: list[str] = []

    def process(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record, default=str) + "\n")

    def finish_bundle(self) -> None:
        if self._lines:
            from apache_beam.io.filesystems import FileSystems

            path = FileSystems.join(self._directory, f"part-{uuid.uuid4().hex}.jsonl")
            with FileSystems.create(path) as f:
                f.write("".join(self._lines).encode())
        self._lines = []


class ContinuousTrainer:
    """Train ``config`` on ``feed`` in cycles, snapshotting into ``output`` (see module).

    A driver, not a ``PTransform``: :meth:`run` loops, running one bounded Beam
    pipeline per cycle (:func:`~beam_ml.transforms.train.train_cycle`, the run that
    ``beam-ml train`` builds too). Formerly named ``TrainContinuously``, still importable.

    Parameters
    ----------
    config : an algorithm config; replaced by the checkpoint's when ``output`` exists
        (a restart continues where the last snapshot ended).
    feed : Feed
    output : str
        Checkpoint directory of the state (and the source positions).
    snapshot_every_seconds : float
        Start a cycle this long after the previous one started.
    snapshot_every_rows : int, optional
        Also start one as soon as this many records wait.
    keep : int
        Snapshots kept in ``output`` (``read_checkpoint(output, payload=...)``).
    window : int, optional
        A sliding window for states that keep everything (PCA, K-Means, exact
        statistics): each cycle trains a state of its own rows, ``output`` keeps the
        last ``window`` of them (with the positions, atomically), and the model is
        derived from their merge: it forgets a cycle's rows ``window`` cycles later.
    model_output : str, optional
        Where each snapshot's model is written; None: no model.
    derive_params : dict
        Parameters of ``state.derive``.
    publish : str, optional
        ``kafka://host:port/topic`` or ``pubsub://projects/P/topics/T``: a JSON message
        announcing each new model (snapshot number, paths, rows, positions).
    stop_after_seconds, stop_when_idle_seconds : float, optional
        Stop after this long in all, or once no record arrived for this long.
    pipeline_args : list of str
        Beam pipeline options of each cycle.
    dead_letters : str, optional
        JSON-lines file the malformed records are appended to.
    extra : dict
        Stored in every checkpoint's manifest (e.g. derive defaults).
    """

    HISTORY = 1000  # cycle outcomes run() keeps

    def __init__(
        self,
        config: Any,
        feed: Feed,
        output: str,
        *,
        snapshot_every_seconds: float = 30.0,
        snapshot_every_rows: int | None = None,
        keep: int = 5,
        window: int | None = None,
        model_output: str | None = None,
        derive_params: dict[str, Any] | None = None,
        publish: str | None = None,
        stop_after_seconds: float | None = None,
        stop_when_idle_seconds: float | None = None,
        pipeline_args: list[str] | None = None,
        dead_letters: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        from beam_ml.io.checkpoints import CheckpointNotFoundError, read_manifest

        if snapshot_every_seconds <= 0:
            raise BadInputError(
                f"snapshot_every must be > 0 seconds; got {snapshot_every_seconds}."
            )
        if state_class_for(config).PLAN.epochs_of(config) > 1:
            raise BadInputError(
                f"epochs={config.epochs}: continuous training reads a stream once; use epochs=1."
            )
        self.state_class = state_class_for(config)
        if window is not None and window < 1:
            raise BadInputError(f"window must be >= 1 snapshots; got {window}.")
        if window is not None and self.state_class.PLAN.epochs is not None:  # SGD families
            raise BadInputError(
                "window applies to states that keep all their data (PCA, K-Means); "
                f"{self.state_class.FAMILY} models forget old data as they learn on."
            )
        self.window = window
        self.config, self.feed, self.output = config, feed, output
        self.every_seconds, self.every_rows = float(snapshot_every_seconds), snapshot_every_rows
        self.keep, self.model_output = keep, model_output
        self.derive_params = dict(derive_params or {})
        self.publish, self.pipeline_args = publish, list(pipeline_args or [])
        self.stop_after, self.stop_when_idle = stop_after_seconds, stop_when_idle_seconds
        self.dead_letters, self.extra = dead_letters, dict(extra or {})
        self.positions: dict[str, Any] = {}
        self.snapshot = 0
        self.rows_read = self.bad_records = self.snapshots_written = 0
        self.n_seen: int | None = None
        self._stopping = False
        try:
            manifest = read_manifest(output)
        except CheckpointNotFoundError:
            manifest = None
        self.resumed = manifest is not None
        if manifest is not None:
            if manifest["algorithm"] != self.state_class.FAMILY:
                raise BadInputError(
                    f"{output!r} holds a {manifest['algorithm']} state, not "
                    f"{self.state_class.FAMILY}."
                )
            self.config = config_from_dict(self.state_class.CONFIG, manifest["config"])
            stored = manifest.get("extra", {})
            self.positions = dict(stored.get("source_positions") or {})
            self.snapshot = int(stored.get("snapshot", 0))
            _log.info(
                "continuing %s from snapshot %d of %s (%s rows)",
                self.state_class.FAMILY,
                self.snapshot,
                output,
                f"{manifest['n_seen']:,}",
            )
        #: What an earlier run read but could not keep (a pipe's lines after its last
        #: snapshot), as a sentence; None if nothing or unknown.
        self.lost = feed.attach(output, self.positions)
        if self.lost:
            _log.warning("%s", self.lost)

    def stop(self, *_: Any) -> None:
        """Finish the running cycle, then return from :meth:`run` (SIGTERM, Ctrl-C);
        a second Ctrl-C interrupts at once (the last checkpoint stays whole)."""
        if self._stopping and _:
            raise KeyboardInterrupt
        self._stopping = True

    def run(self) -> list[Snapshot]:
        """Cycle until stopped; return the last ``HISTORY`` cycles' outcomes (totals in
        ``rows_read``, ``bad_records``, ``snapshots_written``: a run may last months)."""
        from beam_ml.core.runner import pipeline_options

        options = pipeline_options(self.pipeline_args)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self.stop)
        started = time.monotonic()
        last_data = started
        done: collections.deque[Snapshot] = collections.deque(maxlen=self.HISTORY)
        next_at = started
        try:
            while not self._stopping:
                self._wait(next_at, started)
                if self._stopping:
                    break
                cycle_start = time.monotonic()
                take = self.feed.take(self.positions)
                if take is None:
                    now = time.monotonic()
                    if self.feed.ended() or (
                        self.stop_when_idle is not None and now - last_data >= self.stop_when_idle
                    ):
                        break
                    next_at = now + min(self.every_seconds, 0.25)
                    continue
                last_data = cycle_start
                snap = self._cycle(take, options, cycle_start)
                done.append(snap)
                self.rows_read += snap.rows
                self.bad_records += snap.bad_records
                self.snapshots_written += bool(snap.snapshot)
                self.n_seen = snap.n_seen or self.n_seen
                next_at = cycle_start + self.every_seconds
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.feed.close()
        return list(done)

    def _wait(self, until: float, started: float) -> None:
        while not self._stopping:
            now = time.monotonic()
            if self.stop_after is not None and now - started >= self.stop_after:
                self._stopping = True
                return
            if now >= until or self.feed.drained():
                return
            if self.every_rows and self.feed.waiting(self.positions) >= self.every_rows:
                return
            time.sleep(min(0.05 if self.every_rows else 0.25, until - now))

    def _cycle(self, take: Take, options: Any, cycle_start: float) -> Snapshot:
        from beam_ml.io.checkpoints import read_manifest

        if getattr(self.config, "feature_dim", 0) is None and take.n_features and not self.resumed:
            self.config = dataclasses.replace(self.config, feature_dim=take.n_features)
        version = self.snapshot + 1
        extra = {
            **self.extra,
            "source_positions": take.positions,
            "snapshot": version,
            "trained_on": self.feed.name,
        }
        rejected: list[dict[str, Any]] = []  # records the state's update refused
        current: Take | None = take
        rows = bad = 0
        for attempt in range(self.ATTEMPTS):
            if current is None:  # the state refused every record of the take
                break
            try:
                rows, bad = self._run_cycle(current, options, extra)
                break
            except Exception as exc:
                refused = self._refused(current, exc) if attempt + 1 < self.ATTEMPTS else []
                if not refused:
                    raise
                rejected += [letter for _, _, letter in refused]
                keys = {(source, record_id) for source, record_id, _ in refused}
                current = self.feed.without(current, keys)
        if rejected:
            self._append_dead_letters(rejected)
            _log.warning(
                "snapshot %d: %s record(s) set aside%s; the first: %s",
                version,
                f"{len(rejected):,}",
                f" in {self.dead_letters}" if self.dead_letters else "",
                rejected[0]["reason"],
            )
            bad += len(rejected)
        try:
            manifest = read_manifest(self.output)
        except FileNotFoundError:
            manifest = None
        done = current if current is not None else take
        if manifest is None or manifest.get("extra", {}).get("snapshot") != version:
            # Nothing trainable yet (every record malformed): go on past them.
            self.positions = take.positions
            self.feed.commit(done)
            return Snapshot(0, rows, bad, 0, time.monotonic() - cycle_start, take.positions, None)
        self.resumed, self.snapshot, self.positions = True, version, take.positions
        self.feed.commit(done)
        model = self._derive(manifest)
        seconds = time.monotonic() - cycle_start
        snap = Snapshot(version, rows, bad, manifest["n_seen"], seconds, take.positions, model)
        _log.info(
            "snapshot %d: +%s rows (%s in all)%s in %.2f s%s",
            version,
            f"{rows:,}",
            f"{manifest['n_seen']:,}",
            f", {bad:,} malformed" if bad else "",
            seconds,
            f"; model in {model}" if model else "",
        )
        if self.publish:
            self._announce(snap)
        return snap

    #: Runs of one cycle at most: the first, and reruns without the refused records.
    ATTEMPTS = 3
    #: State updates spent finding the refused rows of one cycle; past it, a refused
    #: range of rows is set aside whole.
    SCREEN_BUDGET = 2_000

    def _run_cycle(self, take: Take, options: Any, extra: dict[str, Any]) -> tuple[int, int]:
        """One bounded pipeline: decode, train on, checkpoint. Returns (rows, bad)."""
        from beam_ml.core.runner import counter
        from beam_ml.transforms.train import train_cycle

        dead_dir = temp_dir("dead")
        try:
            p = pipeline_in(dead_dir, options)  # Beam's own folder goes with the letters
            blocks, dead = p | "Read" >> take.read
            _ = dead | "WriteDeadLetters" >> beam.ParDo(_WriteLines(dead_dir))
            resume = self.resumed and not self.window  # a window keeps each cycle's own state
            train_cycle(
                blocks,
                self.config,
                self.output,
                extra,
                resume_from=self.output if resume else None,
                keep=self.window or self.keep,
            )
            result = p.run()
            result.wait_until_finish()
            rows, bad = counter(result, "rows_read"), counter(result, "bad_records")
            self._keep_dead_letters(dead_dir)  # only a pipeline that ran keeps its letters
        finally:
            import shutil

            shutil.rmtree(dead_dir, ignore_errors=True)
        return rows, bad

    def _refused(self, take: Take, error: BaseException) -> list[tuple[str, Any, dict]]:
        """After a failed cycle: the take's records that a fresh state's update refuses,
        as ``(source, id, dead letter)``; [] if none (the failure was something else)."""
        from beam_ml.io.records import decode_records

        try:
            found = self.feed.records(take)
        except Exception as exc:  # the original failure is the one to report
            _log.debug("cannot screen the records after %r: %s", error, exc)
            return []
        if found is None:
            return []
        spec, groups = found
        budget = [self.SCREEN_BUDGET]
        refused = []
        for source, ids, values in groups:
            for start in range(0, len(ids), spec.block_size):
                chunk_ids = ids[start : start + spec.block_size]
                block, bad = decode_records(
                    spec, source, chunk_ids, values[start : start + spec.block_size]
                )
                if block is None:
                    continue
                bad_ids = {b["offset"] for b in bad}
                good = [
                    (i, v)
                    for i, v in zip(chunk_ids, values[start : start + spec.block_size], strict=True)
                    if i not in bad_ids
                ]
                for row, reason in self._refused_rows(block, budget):
                    record_id, value = good[row]
                    letter = self.feed.dead_letter(source, record_id, value, reason)
                    refused.append((source, record_id, letter))
        return refused

    def _refused_rows(self, block: Any, budget: list[int]) -> list[tuple[int, str]]:
        """Rows of ``block`` that a fresh state refuses, with the reason, found by
        halving (a few updates per refused row); past the budget, a refused range of
        rows is refused whole."""
        from beam_ml.core.block import Block

        def refusal(lo: int, hi: int) -> str | None:
            budget[0] -= 1
            labels = None if block.labels is None else block.labels[lo:hi]
            try:
                self.state_class.empty(self.config).update(Block(block.features[lo:hi], labels))
            except ValueError as exc:  # BadInputError and the like: this data is refused
                return f"refused by the {self.state_class.FAMILY} state: {exc}"
            return None

        out: list[tuple[int, str]] = []
        pending = [(0, block.n_rows)]
        while pending:
            lo, hi = pending.pop()
            reason = refusal(lo, hi)
            if reason is None:
                continue
            if hi - lo == 1:
                out.append((lo, reason))
            elif budget[0] <= 0:
                n = hi - lo
                out += [
                    (i, f"{reason} (set aside with its range of {n} rows)") for i in range(lo, hi)
                ]
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
        return sorted(out)

    def _append_dead_letters(self, letters: list[dict[str, Any]]) -> None:
        if self.dead_letters:
            with open(self.dead_letters, "a") as f:
                f.writelines(json.dumps(r, default=str) + "\n" for r in letters)

    def _keep_dead_letters(self, directory: str) -> None:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if self.dead_letters:
                with open(path, "rb") as src, open(self.dead_letters, "ab") as dst:
                    dst.write(src.read())
            os.remove(path)

    def _derive(self, manifest: dict[str, Any]) -> str | None:
        from beam_ml.io.checkpoints import read_checkpoint, write_checkpoint

        if self.model_output is None:
            return None
        if self.window:
            payloads = [h["payload"] for h in manifest["history"]]
            states = [read_checkpoint(self.output, "state", name)[0] for name in payloads]
            state = functools.reduce(lambda a, b: a.merge(b), states)
        else:
            state, _ = read_checkpoint(self.output, "state")
        try:
            model = state.derive(**self.derive_params)
        except NotEnoughDataError as exc:  # e.g. fewer rows than k so far
            _log.warning("snapshot %d: no model yet: %s", self.snapshot, exc)
            return None
        write_checkpoint(
            self.model_output,
            model,
            {
                "derived_from": self.output,
                "snapshot": self.snapshot,
                "params": self.derive_params,
                "n_seen": state.n_seen,
                "source_positions": manifest["extra"]["source_positions"],
            },
        )
        return self.model_output

    def _announce(self, snap: Snapshot) -> None:
        message = json.dumps(
            {
                "algorithm": self.state_class.FAMILY,
                "snapshot": snap.snapshot,
                "state": self.output,
                "model": snap.model,
                "n_seen": snap.n_seen,
                "rows": snap.rows,
                "source_positions": snap.positions,
                "published": time.time(),
            }
        ).encode()
        announce(self.publish, message)


def announce(url: str, message: bytes) -> None:
    """Send ``message`` to ``kafka://host:port/topic`` or ``pubsub://projects/P/topics/T``."""
    if url.startswith("kafka://"):
        from kafka import KafkaProducer

        from beam_ml.io.kafka import parse_kafka_url

        target = parse_kafka_url(url)
        options: dict[str, Any] = {"bootstrap_servers": target["bootstrap_servers"]}
        if "api_version" in target:
            options["api_version"] = target["api_version"]
        producer = KafkaProducer(**options)
        try:
            for topic in target["topics"]:
                producer.send(topic, message)
            producer.flush(30)
        finally:
            producer.close()
    elif url.startswith("pubsub://"):
        from beam_ml.io.pubsub import parse_pubsub_url, publish

        publish(parse_pubsub_url(url, expect="topic"), message)
    else:
        raise BadInputError(
            f"--publish takes kafka://host:port/topic or pubsub://projects/P/topics/T; got {url!r}."
        )


def __getattr__(name: str) -> Any:
    # The driver's name before it said it was one; kept so that old code runs.
    if name == "TrainContinuously":
        warnings.warn(
            "TrainContinuously is now ContinuousTrainer (a driver, not a PTransform); "
            "the old name will go.",
            DeprecationWarning,
            stacklevel=2,
        )
        return ContinuousTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
