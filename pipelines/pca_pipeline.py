"""PCA in your own Beam pipeline, built only from beam_ml's public API.

    python pipelines/pca_pipeline.py --input 'data/*.csv' --output out/ --num_components 10 \\
        [--resume out/state] [any Beam option, e.g. --runner DirectRunner --direct_num_workers 2]

Reads CSV blocks, trains (or continues) a PCA state, checkpoints it, derives a model
and evaluates it on the same data. Writes out/state/, out/model/ and out/metrics.json.
"""

from __future__ import annotations

import argparse
import json

import apache_beam as beam

import beam_ml


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--num_components", type=int, default=10)
    parser.add_argument("--resume")
    args, beam_args = parser.parse_known_args(argv)

    reader = beam_ml.ReadBlocks(args.input, "csv")
    config = beam_ml.PCAConfig(num_components=args.num_components, feature_dim=reader.n_features)
    options = beam_ml.pipeline_options(beam_args)
    with beam.Pipeline(options=options) as p:
        blocks = p | "Read" >> reader
        resumed = p | "Resume" >> beam_ml.ReadCheckpoint(args.resume) if args.resume else None
        state = blocks | beam_ml.Train(config, resume_from=resumed)
        _ = state | beam_ml.WriteCheckpoint(f"{args.output}/state")
        model = state | beam_ml.Derive()
        _ = model | "SaveModel" >> beam.Map(
            lambda m: beam_ml.write_checkpoint(f"{args.output}/model", m)
        )
        _ = (
            blocks
            | beam_ml.Evaluate(model)
            | beam.Map(json.dumps)
            | beam.io.WriteToText(
                f"{args.output}/metrics", ".json", num_shards=1, shard_name_template=""
            )
        )


if __name__ == "__main__":
    run()
