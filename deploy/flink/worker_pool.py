"""Beam's Python worker pool (apache_beam.runners.worker.worker_pool_main) bound to
127.0.0.1 only: Beam's own binds [::] and has no option for the address.

    python deploy/flink/worker_pool.py --service_port=50000

Pipelines then use --environment_type=EXTERNAL --environment_config=127.0.0.1:50000;
each SDK worker it starts is a separate process ('python', which this wrapper makes
this interpreter by putting its folder first on PATH; beam_ml must be importable).
"""

from __future__ import annotations

import itertools
import os
import sys

import grpc
from apache_beam.portability.api import beam_fn_api_pb2
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

# Each Flink TaskManager numbers its SDK workers from 1, so two TaskManagers sharing this
# pool ask for the same worker ids ("1-1"), and Beam's pool keeps one process per id: the
# first TaskManager to finish stopped the other's worker mid-job ("CANCELLED: client
# cancelled"), and its own worker was never stopped. Here each started worker is kept under
# a unique key and StopWorker stops nothing: an SDK worker exits by itself when its runner
# closes the control channel (and the pool still ends the live ones when it exits).
_Servicer = worker_pool_main.BeamFnExternalWorkerPoolServicer
_start_worker = _Servicer.StartWorker
_started = itertools.count()


def _start_worker_with_a_unique_key(self, request, context):
    response = _start_worker(self, request, context)
    processes = self._worker_processes
    if request.worker_id in processes:
        processes[f"{request.worker_id}#{next(_started)}"] = processes.pop(request.worker_id)
    for key in [k for k, process in processes.items() if process.poll() is not None]:
        del processes[key]  # exited by itself
    return response


def _leave_worker_to_exit(self, request, context):
    return beam_fn_api_pb2.StopWorkerResponse()


_Servicer.StartWorker = _start_worker_with_a_unique_key
_Servicer.StopWorker = _leave_worker_to_exit
# Beam starts each worker as the bare command 'python': make it this interpreter's
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

if __name__ == "__main__":
    worker_pool_main.main(sys.argv)
