"""Pipeline options with beam_ml's defaults: an explicit runner, loopback-only servers."""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

__all__ = ["pipeline_options", "bind_direct_runner_to_loopback", "counter"]


class _LoopbackServer:
    """Wraps a grpc server so that '[::]:port' (every interface) becomes 127.0.0.1."""

    def __init__(self, server: Any):
        self._server = server

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address.replace("[::]", "127.0.0.1", 1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _LoopbackGrpc:
    def __init__(self, grpc_module: Any):
        self._grpc = grpc_module

    def server(self, *args: Any, **kwargs: Any) -> _LoopbackServer:
        return _LoopbackServer(self._grpc.server(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grpc, name)


def bind_direct_runner_to_loopback() -> None:
    """Make the DirectRunner's multi-process mode listen on 127.0.0.1 only.

    Beam 2.77's FnApiRunner and its subprocess workers' log servers listen on
    ``[::]:0`` (all interfaces) with no option to change it, while every client dials
    ``localhost``. Binding to loopback keeps a local run off the network. Idempotent.
    """
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    for module in (worker_handlers, local_job_service):
        if not isinstance(module.grpc, _LoopbackGrpc):
            module.grpc = _LoopbackGrpc(module.grpc)


def pipeline_options(argv: list[str] | None = None, **overrides: Any) -> PipelineOptions:
    """PipelineOptions from command-line style ``argv`` plus keyword overrides.

    The runner defaults to ``DirectRunner`` (named explicitly: Beam's default may try to
    download a runner binary first), and a local multi-process run binds to loopback.
    """
    options = PipelineOptions(argv or [], **overrides)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        bind_direct_runner_to_loopback()
    return options


def counter(result: Any, name: str) -> int:
    """The value of beam_ml's counter ``name`` (``rows_read``, ``bad_records``) in a
    finished pipeline's ``result``: committed where the runner commits, else attempted."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace("beam_ml").with_name(name))
    return int(sum(c.committed or c.attempted or 0 for c in found["counters"]))
