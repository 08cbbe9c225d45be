"""The arguments train_job.py and continuous_job.py share: which algorithm, its
hyperparameters and how records are decoded. Plain argparse, not a PipelineOptions
subclass: Beam registers every subclass for every pipeline of the process, so two jobs'
``--input`` would clash; the arguments left over are Beam's pipeline options.

Only the launcher (the process that builds the pipeline: a laptop, Dataflow's flex
template launcher, the Flink application jar's builder) uses this module; the workers
run beam_ml's transforms and never import it.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from beam_ml.core.block import Block
from beam_ml.core.state import config_from_dict, families
from beam_ml.io import formats


def matrix_algorithms() -> list[str]:
    """The algorithms that train on rows of features (all but the time-series ones)."""
    return sorted(name for name, cls in families().items() if cls.BLOCK_KIND is Block)


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with the shared arguments; each job adds its source and output."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--algorithm", required=True, choices=matrix_algorithms())
    parser.add_argument(
        "--hyperparameters",
        default="{}",
        help="JSON object of the algorithm config's fields, e.g. '{\"k\": 10}'",
    )
    parser.add_argument("--format", choices=formats.names(), help="record format")
    parser.add_argument(
        "--label_column", help="index (or CSV header / JSON key) of the label column"
    )
    parser.add_argument(
        "--feature_dim",
        type=int,
        help="features per row (default: found from the input; Pub/Sub and LIBSVM need it)",
    )
    parser.add_argument("--block_size", type=int, default=10_000, help="rows per block")
    return parser


def label_column(text: str | None) -> int | str | None:
    """'3' and '-1' are field indices; anything else is a header name or JSON key."""
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else text


def config(args: argparse.Namespace, n_features: int | None) -> Any:
    """The algorithm's config from --hyperparameters, its feature_dim from the reader
    when the hyperparameters do not give it."""
    try:
        values = json.loads(args.hyperparameters)
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f"--hyperparameters is not JSON ({exc}): {args.hyperparameters!r}"
        ) from None
    if not isinstance(values, dict):
        raise SystemExit(f"--hyperparameters must be a JSON object, got {args.hyperparameters!r}")
    config_class = families()[args.algorithm].CONFIG
    if n_features is not None and "feature_dim" in config_class.__dataclass_fields__:
        values.setdefault("feature_dim", n_features)
    return config_from_dict(config_class, values)
