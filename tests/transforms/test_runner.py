"""beam_ml's default runner: Beam's local runners, never a downloaded Prism binary."""

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.worker import statesampler

from beam_ml.core.runner import LOCAL_RUNNER, LocalRunner, pipeline_options


class _RecordSamplingPeriod(beam.DoFn):
    """Reports the running bundle's state-sampler period as a metric."""

    def process(self, element):
        period = statesampler.get_current_tracker().sampling_period_ms
        Metrics.distribution("test", "sampling_period_ms").update(period)
        yield element


def _run(options):
    """Run a two-element pipeline; return the sampling periods its bundles saw."""
    p = beam.Pipeline(options=options)
    _ = p | beam.Create([1, 2]) | beam.ParDo(_RecordSamplingPeriod())
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query()["distributions"]
    return {(d.committed.min, d.committed.max) for d in found}


@pytest.fixture
def prism_attempts(monkeypatch):
    """Counts the times a runner hands a pipeline to Prism (and lets it fail fast)."""
    attempts = []

    def refuse(self, pipeline, options):
        attempts.append(pipeline)
        raise RuntimeError("Prism is not used in these tests")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return attempts


@pytest.mark.beam
def test_default_runner_never_tries_prism_and_samples_briefly(prism_attempts):
    options = pipeline_options()
    assert options.view_as(StandardOptions).runner == LOCAL_RUNNER
    assert _run(options) == {(10, 10)}
    assert prism_attempts == []
    # The cap is lifted after the run: other runners in the process keep Beam's period.
    assert statesampler.StateSampler.__init__.__defaults__ == (200,)


@pytest.mark.beam
def test_beams_direct_runner_still_tries_prism_first(prism_attempts):
    """What the default avoids, shown with the runner named explicitly (this Beam)."""
    assert _run(pipeline_options(["--runner", "DirectRunner"])) == {(200, 200)}
    assert len(prism_attempts) == 1


@pytest.mark.beam
def test_default_runner_runs_batch_graphs_without_a_proto_round_trip(monkeypatch):
    """As Beam's DirectRunner does for batch (it recognizes itself by class name)."""
    round_trips = []
    original = beam.Pipeline.from_runner_api

    def counting(*args, **kwargs):
        round_trips.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(beam.Pipeline, "from_runner_api", staticmethod(counting))
    assert _run(pipeline_options()) == {(10, 10)} and round_trips == []
    assert not LocalRunner().is_fnapi_compatible()  # outside a run: the DirectRunner's answer
    _run(pipeline_options(["--runner", "beam_ml.core.runner.LocalRunner", "--streaming"]))
    assert round_trips  # streaming (BundleBasedDirectRunner) keeps Beam's round trip


def test_options_make_each_view_once_and_views_stay_live():
    """A view is made once per class (Beam re-parses the flags on every view_as), and
    every view still reads and writes the one set of values."""
    import pickle

    from apache_beam.options.pipeline_options import DirectOptions, TypeOptions

    options = pipeline_options(["--direct_num_workers", "3"], pipeline_type_check=False)
    standard = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is standard
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert options.view_as(TypeOptions).pipeline_type_check is False
    standard.streaming = True
    assert options.view_as(StandardOptions).streaming and options.get_all_options()["streaming"]
    options.view_as(DirectOptions).direct_num_workers = 5
    assert options.get_all_options()["direct_num_workers"] == 5
    again = pickle.loads(pickle.dumps(options))
    assert "_views" not in again.__dict__
    assert again.view_as(DirectOptions).direct_num_workers == 5
    assert again.view_as(StandardOptions).streaming


@pytest.mark.beam
def test_a_run_inspects_each_dofn_once_and_state_still_works(monkeypatch):
    """Beam inspects every DoFn's methods ~20 times in a run; the default runner keeps
    the first answer for the run (a stateful DoFn's specs included) and puts Beam's
    function back afterwards."""
    from apache_beam.transforms import userstate
    from apache_beam.transforms.userstate import BagStateSpec

    class Collect(beam.DoFn):
        BAG = BagStateSpec("bag", beam.coders.VarIntCoder())

        def process(self, element, bag=beam.DoFn.StateParam(BAG)):
            bag.add(element[1])
            yield element[0], sorted(bag.read())

    computed = []
    original = userstate.get_dofn_specs

    def counting(dofn):
        computed.append(type(dofn).__name__)
        return original(dofn)

    monkeypatch.setattr(userstate, "get_dofn_specs", counting)
    p = beam.Pipeline(options=pipeline_options())
    out = p | beam.Create([("a", 1), ("a", 2), ("b", 3)]) | beam.ParDo(Collect())
    computed.clear()  # construction is outside the run
    from apache_beam.testing.util import assert_that, equal_to

    assert_that(out, equal_to([("a", [1]), ("a", [1, 2]), ("b", [3])]))
    p.run().wait_until_finish()
    assert userstate.get_dofn_specs is counting  # put back after the run
    # Once per DoFn object: the graph's own, then each stage's unpickled copy.
    assert 0 < computed.count("Collect") <= 2, computed
