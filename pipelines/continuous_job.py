"""Deployable continuous training job: Pub/Sub or Kafka (unbounded) -> TrainStreaming
-> a checkpoint rewritten at every snapshot.

    python pipelines/continuous_job.py --algorithm pca --hyperparameters '{"num_components": 5}' \\
        --input pubsub://projects/P/subscriptions/S --format csv --feature_dim 20 \\
        --output gs://bucket/pca-live --snapshot_every_seconds 60 [Beam options]
    python pipelines/continuous_job.py ... --input kafka://broker:9092/topic --format jsonl ...

A streaming pipeline: this returns once it is submitted (--wait: once it ends), and it
runs until cancelled (Dataflow: drain; Flink: stop with a savepoint). On Flink, turn
checkpointing on (--checkpointing_interval) so a restarted job resumes its Kafka offsets
and training state together. Pub/Sub needs --feature_dim (else the launcher would pull
a message to count the features). Kafka's partitions and first record are read when the
pipeline is built, so the broker must be reachable from the launcher too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import apache_beam as beam

import beam_ml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # job_args, beside this file
import job_args  # noqa: E402


def arguments() -> argparse.ArgumentParser:
    """beam_ml's arguments of this job (deploy/dataflow's metadata names them)."""
    parser = job_args.parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--input",
        required=True,
        help="pubsub://projects/P/subscriptions/S or kafka://host:port/topic[?start=...]",
    )
    parser.add_argument("--output", required=True, help="folder of the state checkpoint")
    parser.add_argument(
        "--snapshot_every_seconds", type=float, default=30.0, help="time between snapshots"
    )
    parser.add_argument("--keep", type=int, default=5, help="snapshots kept in --output")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="block until the pipeline ends (a local runner needs it; by default the job "
        "is submitted and this returns: Dataflow's launcher, a Flink job server)",
    )
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This job's arguments, and the rest: Beam's pipeline options (streaming)."""
    parser = arguments()
    args, beam_args = parser.parse_known_args(argv)
    if args.format is None:
        parser.error("--format is needed for a stream (csv, jsonl or libsvm)")
    return args, ["--streaming", *beam_args]


def reader(args: argparse.Namespace) -> beam.PTransform:
    options = {
        "label_column": job_args.label_column(args.label_column),
        "feature_dim": args.feature_dim,
        "block_size": args.block_size,
    }
    if args.input.startswith("pubsub://"):
        return beam_ml.ReadPubSub(args.input, args.format, **options)
    if args.input.startswith("kafka://"):
        return beam_ml.ReadKafka.from_url(args.input, args.format, unbounded=True, **options)
    raise SystemExit(f"--input must be pubsub://... or kafka://..., got {args.input!r}")


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """Read -> TrainStreaming -> WriteCheckpoint (each snapshot replaces the last)."""
    read = reader(args)
    config = job_args.config(args, read.n_features)
    _ = (
        pipeline
        | "Read" >> read
        | beam_ml.TrainStreaming(config, snapshot_every_seconds=args.snapshot_every_seconds)
        | "WriteState" >> beam_ml.WriteCheckpoint(args.output, keep=args.keep)
    )


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    args, beam_args = parse(argv)
    pipeline = beam.Pipeline(options=beam_ml.pipeline_options(beam_args))
    build(pipeline, args)
    result = pipeline.run()
    if args.wait:
        result.wait_until_finish()
    return result


if __name__ == "__main__":
    run()
