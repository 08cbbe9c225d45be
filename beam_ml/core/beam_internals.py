"""Every Beam internal that beam_ml patches or reaches into, fenced in this one module.

Written for Apache Beam :data:`BEAM_VERSION` (setup.py pins it). Beam's public API has
no option for any of these; each is a cost or a risk of a *local* run that beam_ml's
:class:`~beam_ml.core.runner.LocalRunner` removes (measured in BENCHMARKS.md):

- :class:`DirectRunnerBase`: ``SwitchingDirectRunner._is_interactive`` (read by its
  ``run_pipeline``), so a local run never tries to download and start Prism; and
  ``is_fnapi_compatible`` (asked by ``Pipeline.run``, with ``pipeline_options_context``),
  so a batch graph skips its proto round trip (~0.05 s a pipeline).
- :func:`state_sampling_period`: the default ``sampling_period_ms`` of
  ``statesampler.StateSampler.__init__`` (0-200 ms of waiting per bundle).
- :func:`dofn_specs_once`: ``userstate.get_dofn_specs``, remembered per DoFn for a run
  (~30 ms a pipeline).
- :func:`workers_with_chosen_logging`: ``SubprocessSDKEnvironment.from_command_string``
  and the FnApiRunner's worker command (:data:`BEAM_WORKER`), so multi-process workers
  log at the command's levels.
- :func:`bind_to_loopback`: the ``grpc`` module of ``fn_api_runner.worker_handlers``
  and ``portability.local_job_service``, so their servers listen on 127.0.0.1 only.

Two more reaches stay where they are used: :mod:`beam_ml.core.worker` starts Beam's
worker, ``sdk_worker_main.main``, importing it itself (it sets up logging before Beam);
:class:`beam_ml.core.runner.Options` makes each options view once, which holds because
views keep no values of their own (they share ``PipelineOptions``' dict).

tests/transforms/test_beam_internals.py pins the version and checks that each internal
still exists with the signature relied on, so a Beam upgrade fails loudly there rather
than quietly here. A run's patches are undone when it ends; the loopback binding lasts
the process's life.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options_context import get_pipeline_options
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate

__all__ = [
    "BEAM_VERSION",
    "BEAM_WORKER",
    "BEAM_ML_WORKER",
    "DirectRunnerBase",
    "bind_to_loopback",
    "dofn_specs_once",
    "state_sampling_period",
    "workers_with_chosen_logging",
]

#: The Apache Beam version every patch below was written for (and setup.py's pin).
BEAM_VERSION = "2.77.0"


# ------------------------------------------------------------------ the DirectRunner
class DirectRunnerBase(SwitchingDirectRunner):
    """Beam's ``SwitchingDirectRunner`` without the Prism attempt, and treated by
    ``Pipeline.run`` as Beam's own DirectRunner (no proto round trip in batch).

    * ``SwitchingDirectRunner.run_pipeline`` first tries Prism unless the pipeline is
      interactive, which it knows from ``_is_interactive``; set here, it chooses between
      the ``FnApiRunner`` (batch) and the ``BundleBasedDirectRunner`` (streaming) exactly
      as it does after Prism declines.
    * ``Pipeline.run`` skips the proto round trip of the graph for a runner whose
      ``is_fnapi_compatible()`` is true, or whose class is named
      ``SwitchingDirectRunner`` (so not for a subclass) in batch.
    """

    _is_interactive = True  # SwitchingDirectRunner: do not try Prism

    def is_fnapi_compatible(self) -> bool:
        """What ``Pipeline.run`` grants ``SwitchingDirectRunner`` by its class name: a batch
        pipeline runs on the FnApiRunner, so it skips the proto round trip of the whole
        graph (~0.05 s of pickling and unpickling every DoFn). Outside ``run`` (no scoped
        options) the answer stays the DirectRunner's, False."""
        options = get_pipeline_options()
        return options is not None and not options.view_as(StandardOptions).streaming


# ------------------------------------------------------------------ the state sampler
@contextlib.contextmanager
def state_sampling_period(milliseconds: int) -> Iterator[None]:
    """While a pipeline runs, the in-process worker's state sampler sleeps at most
    ``milliseconds`` (Beam's default: 200 ms). Its thread is joined at the end of every
    bundle: 0-200 ms of waiting per bundle, ~0.1 s of a 1 s training pipeline and of
    every continuous-training cycle. Left alone if Beam's default is not the known one."""
    init = statesampler.StateSampler.__init__
    saved = init.__defaults__
    if saved == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):  # Beam's signature as known
        init.__defaults__ = (milliseconds,)
    try:
        yield
    finally:
        init.__defaults__ = saved


# ------------------------------------------------------------------ DoFn specs
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


@contextlib.contextmanager
def dofn_specs_once() -> Iterator[None]:
    """While a pipeline runs, ``userstate.get_dofn_specs`` remembers each DoFn's specs
    (:class:`_SpecsOnce`); a run inside a run keeps the outer one's."""
    specs = userstate.get_dofn_specs
    if not isinstance(specs, _SpecsOnce):  # not already inside a run
        userstate.get_dofn_specs = _SpecsOnce(specs)
    try:
        yield
    finally:
        userstate.get_dofn_specs = specs


# ------------------------------------------------------------------ worker processes
#: The command line of Beam's multi-process workers (FnApiRunner), and beam_ml's.
BEAM_WORKER = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
BEAM_ML_WORKER = f"{sys.executable} -m beam_ml.core.worker"


@contextlib.contextmanager
def workers_with_chosen_logging() -> Iterator[None]:
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
        if command_string == BEAM_WORKER:
            command_string = BEAM_ML_WORKER
        return saved.__func__(cls, command_string, **kwargs)

    chosen._beam_ml = True  # type: ignore[attr-defined]
    SubprocessSDKEnvironment.from_command_string = classmethod(chosen)  # type: ignore[assignment]
    try:
        yield
    finally:
        SubprocessSDKEnvironment.from_command_string = saved


# ------------------------------------------------------------------ loopback servers
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


def bind_to_loopback() -> None:
    """Make the DirectRunner's multi-process mode listen on 127.0.0.1 only.

    Beam's FnApiRunner and its subprocess workers' log servers listen on ``[::]:0``
    (all interfaces) with no option to change it, while every client dials
    ``localhost``. Binding to loopback keeps a local run off the network. Idempotent;
    for the process's life (the servers are made while a run is under way).
    """
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    for module in (worker_handlers, local_job_service):
        _grpc_on_loopback(module)


def bind_worker_pool_to_loopback() -> None:
    """Make the LOOPBACK environment's worker pool (``worker_pool_main``, which portable
    runners such as Prism and Flink dial) listen on 127.0.0.1 only. Idempotent."""
    from apache_beam.runners.worker import worker_pool_main

    _grpc_on_loopback(worker_pool_main)


def _grpc_on_loopback(module: Any) -> None:
    if not isinstance(module.grpc, _LoopbackGrpc):
        module.grpc = _LoopbackGrpc(module.grpc)
