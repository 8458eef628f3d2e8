"""The engine a run uses, chosen once (`runners.engines`): asked for by the
Beam options, or by the inputs' size once they are listed."""

from __future__ import annotations

import pytest

from profile_import.inputs.plan import InputFile
from profile_import.runners import engines, runner_choice
from profile_import.runners.settings import RunSettings, UsageError
from profile_import.transforms.steps.outputs import Output


def settings(*beam_args: str) -> RunSettings:
    return RunSettings(inputs=["a.ndjson"], store="store", beam_args=list(beam_args))


def outputs() -> engines.Outputs:
    return engines.Outputs(
        Output("--report", "-"), Output("--rejects", None), Output("--changes", None)
    )


def test_no_beam_option_lets_the_size_decide_once_the_inputs_are_listed() -> None:
    engine = engines.requested(settings())
    assert isinstance(engine, engines.SizeDecides)
    # Until then the report names Beam's local runner and no workers.
    assert (engine.name, engine.workers()) == (runner_choice.LOCAL_RUNNER, None)
    small = [InputFile(0, "a.ndjson", 1000, None)]
    assert isinstance(engine.decided(small), engines.InProcess)
    unsized = [InputFile(0, "a.ndjson", None, None)]
    decided = engine.decided(unsized)
    assert isinstance(decided, engines.BeamRunner)
    assert decided.name == runner_choice.LOCAL_RUNNER and decided.is_local
    assert decided.decided(small) is decided  # chosen once


def test_in_process_is_asked_for_and_refuses_beam_options_beside_it() -> None:
    engine = engines.requested(settings("--runner=InProcess"))
    assert isinstance(engine, engines.InProcess)
    assert engine.name == runner_choice.IN_PROCESS and engine.workers() == 1
    assert engine.check(settings("--runner=InProcess"), outputs()) is None
    with pytest.raises(UsageError, match=r"^--runner=InProcess runs no Beam pipeline: --x=1"):
        engine.check(settings("--runner=InProcess", "--x=1"), outputs())


def test_a_beam_option_asks_for_beam_and_unknown_ones_are_refused() -> None:
    engine = engines.requested(settings("--direct_num_workers=2"))
    assert isinstance(engine, engines.BeamRunner)
    assert engine.is_local and engine.on_this_machine and not engine.builds_only
    assert engine.workers() == 2 and engine.spills
    unknown = settings("--no_such_option=1")
    with pytest.raises(UsageError, match=r"unknown option\(s\): --no_such_option=1 \(see --help\)"):
        engines.requested(unknown).check(unknown, outputs())
