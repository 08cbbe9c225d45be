"""The Beam internals fenced in beam_ml.core.beam_internals are still there, as they were.

A Beam upgrade fails here first, by name: each test checks one internal that a patch
relies on. When one fails, read the patch's reason in beam_internals, check it against
the new Beam, adapt it (or drop it), then move BEAM_VERSION and setup.py's pin together.
"""

import inspect
import re
import sys
from pathlib import Path

import apache_beam
from apache_beam import pipeline
from apache_beam.options import pipeline_options_context
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
from apache_beam.runners.worker import sdk_worker_main, statesampler
from apache_beam.transforms import environments, userstate

from beam_ml.core import beam_internals

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_beam_is_the_one_the_patches_were_written_for():
    pin = re.search(r'"apache-beam==([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert beam_internals.BEAM_VERSION == pin
    assert apache_beam.__version__ == pin


def test_switching_direct_runner_reads_is_interactive_before_trying_prism():
    runner = direct_runner.SwitchingDirectRunner
    assert runner._is_interactive is False
    assert "_PrismRunnerSupportVisitor().accept(pipeline, self._is_interactive)" in (
        inspect.getsource(runner.run_pipeline)
    )
    assert list(inspect.signature(runner.run_pipeline).parameters) == [
        "self",
        "pipeline",
        "options",
    ]


def test_pipeline_run_skips_the_round_trip_for_fnapi_compatible_runners():
    # run() scopes the options that is_fnapi_compatible reads, then converts (or not).
    assert "with scoped_pipeline_options(self._options):" in inspect.getsource(
        pipeline.Pipeline.run
    )
    source = inspect.getsource(pipeline.Pipeline._run_internal)
    assert "self.runner.is_fnapi_compatible()" in source
    assert "'SwitchingDirectRunner'" in source  # what the base class gets by its name
    assert inspect.signature(pipeline_options_context.get_pipeline_options).parameters == {}


def test_state_sampler_takes_its_period_as_the_last_default():
    init = statesampler.StateSampler.__init__
    assert init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)
    assert list(inspect.signature(init).parameters)[-1] == "sampling_period_ms"
    assert statesampler.DEFAULT_SAMPLING_PERIOD_MS == 200


def test_get_dofn_specs_is_looked_up_on_its_module_and_returns_two_sets():
    assert list(inspect.signature(userstate.get_dofn_specs).parameters) == ["dofn"]
    states, timers = userstate.get_dofn_specs(apache_beam.DoFn())
    assert (states, timers) == (set(), set())
    # Beam's callers find it through the module (so patching the module reaches them).
    assert "userstate.get_dofn_specs(" in inspect.getsource(
        sys.modules["apache_beam.transforms.core"]
    )


def test_the_fnapi_runner_starts_workers_with_the_command_that_is_replaced():
    method = environments.SubprocessSDKEnvironment.__dict__["from_command_string"]
    assert isinstance(method, classmethod)
    assert list(inspect.signature(method.__func__).parameters) == ["cls", "command_string"]
    source = inspect.getsource(fn_runner)
    assert "'%s -m apache_beam.runners.worker.sdk_worker_main'" in source
    assert beam_internals.BEAM_WORKER == f"{sys.executable} -m {sdk_worker_main.__name__}"
    assert callable(sdk_worker_main.main)  # what beam_ml.core.worker runs


def test_local_servers_come_from_the_module_level_grpc_on_every_interface():
    import grpc

    for module in (worker_handlers, local_job_service):
        assert module.grpc is grpc or isinstance(module.grpc, beam_internals._LoopbackGrpc)
        source = inspect.getsource(module)
        assert "grpc.server(" in source and "add_insecure_port('[::]:0')" in source


def test_the_worker_pool_server_comes_from_the_module_level_grpc():
    """What bind_worker_pool_to_loopback rewrites: the LOOPBACK worker pool's address."""
    import grpc
    from apache_beam.runners.worker import worker_pool_main

    assert worker_pool_main.grpc is grpc or isinstance(
        worker_pool_main.grpc, beam_internals._LoopbackGrpc
    )
    source = inspect.getsource(worker_pool_main)
    assert "grpc.server(" in source and "'[::]:%s' % port" in source


def test_pipeline_option_views_keep_no_values_of_their_own():
    """What beam_ml.core.runner.Options relies on to make each view once."""
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        PipelineOptions,
        StandardOptions,
    )

    options = PipelineOptions([])
    options.view_as(StandardOptions).runner = "SomeRunner"
    assert options.view_as(DirectOptions).view_as(StandardOptions).runner == "SomeRunner"
    assert "__getstate__" in PipelineOptions.__dict__
