"""Pipeline options with beam_ml's defaults: a local runner that stays local, loopback-only
servers."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.options.pipeline_options_context import get_pipeline_options
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate

__all__ = [
    "LOCAL_RUNNER",
    "LocalRunner",
    "Options",
    "bind_direct_runner_to_loopback",
    "counter",
    "pipeline_options",
]

#: The ``--runner`` value of :class:`LocalRunner`, beam_ml's default.
LOCAL_RUNNER = "beam_ml.core.runner.LocalRunner"

#: Longest sleep of the state sampler's thread in a local run (Beam's default: 200 ms).
_SAMPLING_PERIOD_MS = 10


class LocalRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without its costly surprises; beam_ml's default runner.

    * Beam 2.77's ``DirectRunner`` first tries the Prism runner, a Go binary it downloads
      from GitHub on first use: with internet access a "local" run silently runs on a
      downloaded program, offline every run makes a failing HTTPS request first (and
      behind a firewall that drops packets, waits for it). This runner never does: it
      chooses between Beam's in-process ``FnApiRunner`` (batch) and the
      ``BundleBasedDirectRunner`` (streaming) exactly as the ``DirectRunner`` does after
      Prism declines. (The ``DirectRunner`` skips Prism for interactive pipelines; the
      flag below is how it knows.)
    * The in-process worker samples each bundle's state in a thread that sleeps up to
      200 ms and is joined at the end of every bundle: 0-200 ms of waiting per bundle,
      ~0.1 s of a 1 s training pipeline and of every continuous-training cycle. Here
      the sampler sleeps at most 10 ms.
    * A batch graph goes to the FnApiRunner without first being converted to protos and
      back, as ``Pipeline.run`` already does for Beam's DirectRunner (which it
      recognizes by class name, so not for a subclass without
      :meth:`is_fnapi_compatible`).

    ``--runner DirectRunner`` still gets Beam's own.
    """

    _is_interactive = True  # SwitchingDirectRunner: do not try Prism

    def is_fnapi_compatible(self) -> bool:
        """What ``Pipeline.run`` grants ``SwitchingDirectRunner`` by its class name: a batch
        pipeline runs on the FnApiRunner, so it skips the proto round trip of the whole
        graph (~0.05 s of pickling and unpickling every DoFn). Outside ``run`` (no scoped
        options) the answer stays the DirectRunner's, False."""
        options = get_pipeline_options()
        return options is not None and not options.view_as(StandardOptions).streaming

    def run_pipeline(self, pipeline: Any, options: PipelineOptions) -> Any:
        with _workers_with_chosen_logging():
            return self._run_pipeline(pipeline, options)

    def _run_pipeline(self, pipeline: Any, options: PipelineOptions) -> Any:
        init = statesampler.StateSampler.__init__
        saved = init.__defaults__
        if saved == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):  # Beam's signature as known
            init.__defaults__ = (_SAMPLING_PERIOD_MS,)
        specs = userstate.get_dofn_specs
        if not isinstance(specs, _SpecsOnce):  # not already inside a run
            userstate.get_dofn_specs = _SpecsOnce(specs)
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            init.__defaults__ = saved
            userstate.get_dofn_specs = specs


#: The command line of Beam's multi-process workers (FnApiRunner), and beam_ml's.
_BEAM_WORKER = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
_BEAM_ML_WORKER = f"{sys.executable} -m beam_ml.core.worker"


@contextlib.contextmanager
def _workers_with_chosen_logging() -> Iterator[None]:
    """While a pipeline runs: if the environment names worker log levels (the
    ``beam-ml`` command sets them from --quiet and --debug), its multi-process workers
    are started as :mod:`beam_ml.core.worker`, which logs at those levels, instead of
    Beam's own module, which prints Beam's INFO lines and import warnings on the
    command's standard error. Only that exact command is replaced."""
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    from beam_ml.core.worker import LOG_LEVELS_ENV

    saved = SubprocessSDKEnvironment.__dict__["from_command_string"]
    if not os.environ.get(LOG_LEVELS_ENV) or getattr(saved.__func__, "_beam_ml", False):
        yield  # not asked for, or already in place (a run inside a run)
        return

    def chosen(cls: type, command_string: str, **kwargs: Any) -> Any:
        if command_string == _BEAM_WORKER:
            command_string = _BEAM_ML_WORKER
        return saved.__func__(cls, command_string, **kwargs)

    chosen._beam_ml = True  # type: ignore[attr-defined]
    SubprocessSDKEnvironment.from_command_string = classmethod(chosen)  # type: ignore[assignment]
    try:
        yield
    finally:
        SubprocessSDKEnvironment.from_command_string = saved


class _SpecsOnce:
    """Beam's ``userstate.get_dofn_specs``, computed once per DoFn for one run.

    It wraps and inspects the signature of every method of a DoFn (~0.3 ms), and a run
    asks it ~100 times for a handful of DoFns (converting the graph, choosing the
    runner, building each stage's operations): ~30 ms of a small pipeline's ~140 ms
    of fixed cost. A DoFn's specs are its methods' default arguments, which do not
    change during a run.
    """

    def __init__(self, compute: Any):
        self._compute = compute
        self._seen: dict[int, tuple[Any, Any]] = {}  # id -> (dofn, specs); the run's only

    def __call__(self, dofn: Any) -> Any:
        hit = self._seen.get(id(dofn))
        if hit is None or hit[0] is not dofn:
            hit = self._seen[id(dofn)] = (dofn, self._compute(dofn))
        states, timers = hit[1]
        return set(states), set(timers)  # callers get their own sets, as from Beam


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


class Options(PipelineOptions):
    """Beam's PipelineOptions, with each view made once.

    ``view_as`` builds an argparse parser for the asked class and parses the flags
    again on every call, and Beam asks for a view at every transform applied (type
    checks, resource hints): ~0.5 ms each, more than half of the time it takes to
    build a small training pipeline. A view holds nothing of its own (its values live
    in the dict all views share, and the flags never change), so one per class serves.
    """

    def view_as(self, cls: type[Any]) -> Any:
        views = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_views", None)  # rebuilt on demand
        return state


def pipeline_options(argv: list[str] | None = None, **overrides: Any) -> PipelineOptions:
    """PipelineOptions from command-line style ``argv`` plus keyword overrides.

    The runner defaults to :class:`LocalRunner` (Beam's own default, the DirectRunner,
    first tries to download and start a runner binary), and a local multi-process run
    binds to loopback.
    """
    options = Options(argv or [], **overrides)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        bind_direct_runner_to_loopback()
    return options


def counter(result: Any, name: str) -> int:
    """The value of beam_ml's counter ``name`` (``rows_read``, ``bad_records``) in a
    finished pipeline's ``result``: committed where the runner commits, else attempted."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace("beam_ml").with_name(name))
    return int(sum(c.committed or c.attempted or 0 for c in found["counters"]))
