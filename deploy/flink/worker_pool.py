"""Beam's Python worker pool (apache_beam.runners.worker.worker_pool_main) bound to
127.0.0.1 only: Beam's own binds [::] and has no option for the address.

    python deploy/flink/worker_pool.py --service_port=50000

Pipelines then use --environment_type=EXTERNAL --environment_config=127.0.0.1:50000;
each SDK worker it starts is a separate process ('python', which this wrapper makes
this interpreter by putting its folder first on PATH; beam_ml must be importable).
"""

from __future__ import annotations

import os
import sys

import grpc
from apache_beam.runners.worker import worker_pool_main

_server = grpc.server


def _loopback_server(*args, **kwargs):
    server = _server(*args, **kwargs)
    add = server.add_insecure_port

    def add_insecure_port(address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"127.0.0.1:{port}"
        return add(address)

    server.add_insecure_port = add_insecure_port
    return server


grpc.server = _loopback_server
# Beam starts each worker as the bare command 'python': make it this interpreter's
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

if __name__ == "__main__":
    worker_pool_main.main(sys.argv)
