"""Deployable batch training job: files -> Train(ALGORITHM) -> state checkpoint + model.

    python pipelines/train_job.py --algorithm kmeans --hyperparameters '{"k": 10}' \\
        --input 'gs://bucket/train/*.csv' --label_column 0 --output gs://bucket/kmeans \\
        [Beam options: --runner DataflowRunner --project P --region R ... | --runner
         PortableRunner --job_endpoint host:8099 ... | --runner FlinkRunner ...]

Writes the trained state to <output>/state and the model derived from it with the
algorithm's defaults to <output>/model (both beam_ml checkpoints, never pickles).
The route to each engine is in deploy/README.md; this file is what they run.
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
    parser.add_argument("--input", required=True, help="file glob (local, gs://, s3://)")
    parser.add_argument("--output", required=True, help="folder of the state and the model")
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This job's arguments, and the rest: Beam's pipeline options."""
    return arguments().parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """Read -> Train -> WriteCheckpoint (state), Derive -> WriteCheckpoint (model)."""
    reader = beam_ml.ReadBlocks(
        args.input,
        args.format or Path(args.input).suffix.lstrip("."),
        label_column=job_args.label_column(args.label_column),
        feature_dim=args.feature_dim,
        block_size=args.block_size,
    )
    config = job_args.config(args, reader.n_features)
    state = pipeline | "Read" >> reader | beam_ml.Train(config)
    _ = state | "WriteState" >> beam_ml.WriteCheckpoint(f"{args.output}/state")
    _ = state | beam_ml.Derive() | "WriteModel" >> beam_ml.WriteCheckpoint(f"{args.output}/model")


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    args, beam_args = parse(argv)
    pipeline = beam.Pipeline(options=beam_ml.pipeline_options(beam_args))
    build(pipeline, args)
    result = pipeline.run()
    result.wait_until_finish()
    return result


if __name__ == "__main__":
    run()
