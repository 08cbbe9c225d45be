"""Continuous training: latency from a record produced to a published model that
includes it, and the trainer's resident memory over a long run.

A Kafka-protocol cluster (librdkafka's mock cluster, in this process, on 127.0.0.1)
receives CSV rows at a steady rate; ``beam-ml train ALGO --streaming`` runs as a
separate process; a watcher polls the model directory's manifest, whose
``source_positions`` say which offsets the model includes. Each record's latency is
(the first time a published model includes its offset) - (its send time).

    python benchmarks/bench_streaming.py                     # 60 s, snapshots every 5 s
    python benchmarks/bench_streaming.py --minutes 10        # the soak run (RSS figures)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.streaming.kafka_cluster import API_VERSION, MockKafkaCluster  # noqa: E402


def _rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (Beam may start workers), MiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to stream")
    parser.add_argument("--interval", type=float, default=5.0, help="--snapshot_every, s")
    parser.add_argument("--rate", type=int, default=2_000, help="rows per second")
    parser.add_argument("--algorithm", default="kmeans", choices=("kmeans", "pca"))
    parser.add_argument("--features", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="beam_ml_bench_stream_"))
    cluster = MockKafkaCluster(brokers=1)
    topic = "events"
    cluster.create_topic(topic, partitions=1)
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers, api_version=API_VERSION, linger_ms=2
    )
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(8, args.features))
    hyper = ["--k", "8"] if args.algorithm == "kmeans" else ["--num_components", "4"]
    state_dir, model_dir = workdir / "state", workdir / "state.model"

    sent_at: list[float] = []  # by offset (one partition, one producer: offsets in order)
    stop = threading.Event()

    def produce() -> None:
        batch = max(1, args.rate // 20)  # 20 batches a second
        while not stop.is_set():
            t = time.time()
            rows = centres[rng.integers(0, 8, batch)] + rng.normal(size=(batch, args.features))
            for r in rows:
                producer.send(topic, ",".join(f"{v:.5f}" for v in r).encode())
            producer.flush()
            sent_at.extend([t] * batch)
            time.sleep(max(0.0, 0.05 - (time.time() - t)))

    # The first records exist before the trainer starts (it needs a row to count columns).
    producer.send(topic, ",".join("0" for _ in range(args.features)).encode())
    producer.flush()
    sent_at.append(time.time())
    trainer = subprocess.Popen(
        [
            sys.executable, "-m", "beam_ml.cli", "train", args.algorithm, *hyper,
            "--input", f"kafka://{cluster.bootstrap_servers}/{topic}?api_version=2.3",
            "--format", "csv", "--output", str(state_dir), "--streaming",
            "--snapshot_every", f"{args.interval}s",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()

    latencies: list[float] = []
    covered = 0
    rss: list[tuple[float, float]] = []
    started = time.time()
    last_manifest = None
    next_rss = started
    end = started + args.minutes * 60
    while time.time() < end and trainer.poll() is None:
        now = time.time()
        try:
            text = (model_dir / "manifest.json").read_text()
        except OSError:
            text = None
        if text and text != last_manifest:
            last_manifest = text
            offset = json.loads(text)["extra"]["source_positions"][f"{topic}:0"]
            upto = min(offset, len(sent_at))
            latencies += [now - t for t in sent_at[covered:upto]]
            covered = max(covered, upto)
        if now >= next_rss:
            rss.append((now - started, _rss_mib(trainer.pid)))
            next_rss += 10.0
        time.sleep(0.01)
    stop.set()
    feeder.join()
    trainer.terminate()
    _, err = trainer.communicate(timeout=120)
    cluster.close()
    if not latencies:
        raise SystemExit(f"no model was published:\n{err.decode()}")

    lat = np.array(latencies[1:])  # the first record waited for the trainer to start
    warm = np.array([x for t, x in zip(sent_at[1:covered], lat, strict=True) if t >= started + 15])
    produced = len(sent_at)
    print(f"algorithm {args.algorithm}, {args.features} features, {args.rate:,} rows/s for "
          f"{args.minutes:g} min, --snapshot_every {args.interval:g}s")  # fmt: skip
    print(f"records produced {produced:,}; in a published model {covered:,}")
    print(
        f"latency produce -> published model: p50 {np.percentile(lat, 50):.2f} s, "
        f"p95 {np.percentile(lat, 95):.2f} s, max {lat.max():.2f} s "
        f"(target: < interval + 1 s = {args.interval + 1:.1f} s)"
    )
    if warm.size:
        print(
            f"  after the first 15 s: p50 {np.percentile(warm, 50):.2f} s, "
            f"p95 {np.percentile(warm, 95):.2f} s, max {warm.max():.2f} s"
        )
    import re

    cycles = [float(x) for x in re.findall(r"snapshot \d+: .* in ([0-9.]+) s", err.decode())]
    if cycles:
        print(
            f"{len(cycles)} snapshots; cycle (read + train + checkpoint + derive + write "
            f"model): median {np.median(cycles):.2f} s, max {max(cycles):.2f} s "
            f"({' '.join(f'{c:.2f}' for c in cycles[:4])} ...)"
        )
    rss = [(t, r) for t, r in rss if t >= 20.0]  # after start-up (imports, first cycles)
    if rss:
        values = np.array([r for _, r in rss])
        first = values[: max(1, len(values) // 10)].mean()
        last = values[-max(1, len(values) // 10) :].mean()
        print(
            f"trainer RSS: first {first:.0f} MiB, last {last:.0f} MiB, max {values.max():.0f} MiB "
            f"({len(values)} samples, every 10 s)"
        )
        per_minute = [f"{t / 60:.0f}m {r:.0f}" for t, r in rss if int(t) % 60 < 10]
        print("  by minute (MiB): " + ", ".join(per_minute))


if __name__ == "__main__":
    main()
