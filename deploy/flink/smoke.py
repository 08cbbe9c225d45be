"""Smoke test: train beam_ml's algorithms from .npy files on a portable runner (Flink
through Beam's job server) and compare each trained state with beam_ml's local run
(its LocalRunner: Beam's DirectRunner without the Prism download).

    python deploy/flink/smoke.py [--algorithms pca,kmeans,linear,fm] \
        --runner=PortableRunner --job_endpoint=127.0.0.1:8099 \
        --environment_type=LOOPBACK --parallelism=2

The other arguments are Beam pipeline options for the portable run (--runner is
required: beam_ml's default is its LocalRunner). A state matches when n_seen is equal
and every scalar and array agrees within rtol/atol 1e-9 (the runners merge partial
states in different orders, so floats agree to rounding, not bit for bit). Exits 0 when
every algorithm matched, 1 otherwise; a pipeline error propagates (non-zero too).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import apache_beam as beam
import numpy as np

import beam_ml

N_FEATURES = 8
ROWS, FILES = 2_500, 4


def configs() -> dict[str, object]:
    return {
        "pca": beam_ml.PCAConfig(num_components=3, feature_dim=N_FEATURES),
        "kmeans": beam_ml.KMeansConfig(k=3, feature_dim=N_FEATURES),
        "linear": beam_ml.LinearLearnerConfig(
            predictor_type="regressor", feature_dim=N_FEATURES, num_models=2
        ),
        "fm": beam_ml.FactorizationMachinesConfig(
            feature_dim=N_FEATURES, num_factors=2, predictor_type="regressor"
        ),
    }


def train(config: object, pattern: str, out: str, argv: list[str]) -> float:
    start = time.monotonic()
    with beam.Pipeline(options=beam_ml.pipeline_options(argv)) as p:
        blocks = p | beam_ml.ReadBlocks(pattern, "npy", label_column=-1, block_size=500)
        _ = blocks | beam_ml.Train(config) | beam_ml.WriteCheckpoint(out)
    return time.monotonic() - start


def compare(local: object, remote: object) -> bool:
    (lmeta, larr), (rmeta, rarr) = local._payload(), remote._payload()
    ok = local.n_seen == remote.n_seen == ROWS * FILES
    print(f"  n_seen local={local.n_seen} portable={remote.n_seen}")
    ok = ok and lmeta.keys() == rmeta.keys() and larr.keys() == rarr.keys()
    for key in lmeta:
        a, b = lmeta[key], rmeta.get(key)
        same = a == b or (
            isinstance(a, float) and isinstance(b, float) and np.isclose(a, b, rtol=1e-9, atol=1e-9)
        )
        if not same:
            print(f"  {key}: DIFFERENT local={a!r} portable={b!r}")
        ok = ok and same
    for name in sorted(larr):
        a, b = larr[name], rarr.get(name)
        shaped = b is not None and a.shape == b.shape
        same = shaped and np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
        numeric = shaped and a.size and a.dtype.kind in "fiu"
        diff = float(np.nanmax(np.abs(a - b))) if numeric else None
        print(f"  {name}: {'equal' if same else 'DIFFERENT'} (max abs diff {diff})")
        ok = ok and same
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algorithms", default="pca,kmeans,linear,fm")
    args, beam_args = parser.parse_known_args(argv)
    if not any(a.startswith("--runner") for a in beam_args):
        sys.exit("pass --runner explicitly (beam_ml's default is its LocalRunner)")
    wanted = args.algorithms.split(",")
    all_configs = configs()
    failed = []
    with tempfile.TemporaryDirectory(prefix="beam_ml_flink_smoke_") as tmp:
        rng = np.random.default_rng(17)
        mixing = rng.normal(size=(N_FEATURES, N_FEATURES))
        weights = rng.normal(size=N_FEATURES)
        for i in range(FILES):
            x = rng.normal(size=(ROWS, N_FEATURES)) @ mixing
            y = x @ weights + rng.normal(scale=0.1, size=ROWS)
            np.save(f"{tmp}/part-{i}.npy", np.column_stack([x, y]))
        pattern = f"{tmp}/part-*.npy"
        for name in wanted:
            config = all_configs[name]
            t_local = train(config, pattern, f"{tmp}/{name}-local", [])
            t_remote = train(config, pattern, f"{tmp}/{name}-remote", beam_args)
            local, _ = beam_ml.read_checkpoint(f"{tmp}/{name}-local")
            remote, _ = beam_ml.read_checkpoint(f"{tmp}/{name}-remote")
            print(f"{name}: local run {t_local:.1f} s, portable run {t_remote:.1f} s")
            if compare(local, remote):
                print(f"{name}: MATCH")
            else:
                print(f"{name}: MISMATCH")
                failed.append(name)
    names = f": {', '.join(failed)}" if failed else ""
    print(f"{len(wanted) - len(failed)} matched, {len(failed)} mismatched{names}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
