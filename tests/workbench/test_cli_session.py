"""The CLI session's Ctrl-C: the first stops the mode and parks the followers; a second one during the park stops
it and turns torque off where the arms stand, and says so (it used to abort the park with no torque-off and no
message: the process left the arms powered mid-motion)."""
import numpy as np
import pytest

from workbench import cli_session
from workbench import session as session_module


def test_a_second_ctrl_c_during_parking_turns_torque_off_and_says_so(monkeypatch, capsys):
    rigs = []
    real_park = session_module.park

    def park(rig, progress=None, stop=None):
        """The real park; the operator presses Ctrl-C again on its tenth command."""
        rigs.append(rig)
        real_command, calls = rig.safety.command, []

        def command(name, target, present=None):
            calls.append(name)
            if len(calls) == 10:
                raise KeyboardInterrupt
            return real_command(name, target, present)

        monkeypatch.setattr(rig.safety, "command", command)
        return real_park(rig, progress or (lambda m: None), stop)

    monkeypatch.setattr(session_module, "park", park)

    def start(session):
        raise KeyboardInterrupt  # the first Ctrl-C, while the mode starts

    try:
        cli_session.run_session("sim-transfer-cube", start, on_event=lambda e: None)
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C escaped the CLI session: the park was aborted with no torque-off")
    (rig,) = rigs
    err = capsys.readouterr().err
    assert "second Ctrl-C" in err and "torque off" in err, err
    assert not rig.connected
    # torque off on every follower joint: the simulated servos' gains are zero
    gains = rig.sim.model.actuator_gainprm[:, 0]
    assert np.all(gains == 0), gains
