"""The CLI's raw keyboard (recording and trials) on a real pseudo-terminal: single keys are commands, a typed line
after its prompt key is text (its letters are not commands), the e-stop keys (e, space, Esc) press the session's
e-stop, and the terminal mode is restored."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r'''
import sys, time, termios
sys.path.insert(0, sys.argv[1])
from workbench.cli_trials import TrialKeys
calls = []
class Runner:
    source = None
    class control:
        @staticmethod
        def toggle(op): calls.append(("toggle", op))
    def next(self): calls.append(("next",))
    def stop(self): calls.append(("stop",))
    def command(self, text): calls.append(("command", text))
before = termios.tcgetattr(0)
keys = TrialKeys(Runner())
keys.start()
time.sleep(float(sys.argv[2]))
keys.stop(); keys.join(2)
print("CALLS", calls, "RESTORED", termios.tcgetattr(0) == before, flush=True)
'''


def test_trial_keys_on_a_pty():
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), "3"], stdin=slave, stdout=subprocess.PIPE,
                            text=True)
    os.close(slave)
    time.sleep(1.0)
    for chunk in (b"c", b"next now", b"\r", b"t", b"n", b"q"):
        os.write(master, chunk)
        time.sleep(0.15)
    out, _ = proc.communicate(timeout=20)
    os.close(master)
    line = next(x for x in out.splitlines() if x.startswith("CALLS"))
    assert "('command', 'next now')" in line
    assert line.index("('command'") < line.index("('toggle', False)") < line.index("('next',)") < line.index("('stop',)")
    assert line.count("('next',)") == 1  # the n of "next now" was text, not a command
    assert line.endswith("RESTORED True")


ESTOP_CHILD = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from workbench.cli_record import KeyboardEvents
from workbench.cli_trials import TrialKeys
calls = []
class Runner:
    source = None
    def next(self): calls.append(("next",))
    def stop(self): calls.append(("stop",))
    def command(self, text): calls.append(("command", text))
class Session:
    def estop(self, reason): calls.append(("estop", reason))
class Events:
    def put(self, kind, label=""): calls.append(("event", kind.value))
keys = (TrialKeys(Runner()) if sys.argv[3] == "trials" else KeyboardEvents(Events(), {})).with_estop(Session())
keys.start()
time.sleep(float(sys.argv[2]))
keys.stop(); keys.join(2)
print("CALLS", calls, flush=True)
'''


@pytest.mark.parametrize("cli", ["trials", "record"])
def test_estop_keys_on_a_pty(cli):
    """e, space and a lone Esc press the e-stop; typed text keeps its e's and spaces; an arrow key's escape
    sequence is not an Esc; Esc while a line is typed still stops (the line is dropped)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", ESTOP_CHILD, str(ROOT), "4", cli], stdin=slave,
                            stdout=subprocess.PIPE, text=True)
    os.close(slave)
    time.sleep(1.0)
    text_key = b"c" if cli == "trials" else b"s"
    for chunk in (b"e", b"\x1b[A", text_key, b"see me", b"\r", b" ", text_key, b"half", b"\x1b", b"n", b"q"):
        os.write(master, chunk)
        time.sleep(0.15)
    out, _ = proc.communicate(timeout=20)
    os.close(master)
    line = next(x for x in out.splitlines() if x.startswith("CALLS"))
    calls = eval(line[len("CALLS "):])  # noqa: S307 - our own child's repr
    estops = [c[1] for c in calls if c[0] == "estop"]
    assert estops == ["e key (terminal)", "space key (terminal)", "Esc key (terminal)"], calls
    if cli == "trials":
        assert ("command", "see me") in calls and ("command", "half") not in calls
        assert calls[-2:] == [("next",), ("stop",)], calls
    else:
        assert ("event", "mark") in calls and calls[-2:] == [("event", "next"), ("event", "stop")], calls


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path, monkeypatch):
    """`workbench episodes DIR show NAME | head -1`: the reader is gone before the output ends (a real OS pipe,
    its read end closed): the command ends quietly with 0, no BrokenPipeError traceback."""
    import io
    import os
    import sys

    from recorder.store import DatasetStore
    from tests.recorder.helpers import CAMS, tick
    from workbench.cli import main

    store = DatasetStore(tmp_path / "d")
    w = store.new_episode(CAMS, task="t", control_hz=50)
    for i in range(30):
        w.append(tick(i))
    w.stop()
    r, wfd = os.pipe()
    os.close(r)
    out = io.TextIOWrapper(os.fdopen(wfd, "wb", buffering=1 << 16), write_through=False)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["episodes", str(tmp_path / "d"), "show", "episode_0"]) == 0


def test_the_app_set_up_installs_no_ssh_server():
    """`bootstrap app` is what an operator's PC runs: no sshd there (only the tests need one, `bootstrap test`)."""
    from workbench import bootstrap

    assert "openssh-server" not in bootstrap.APT_PACKAGES and "openssh-server" in bootstrap.TEST_APT_PACKAGES
    assert "openssh-client" in bootstrap.APT_PACKAGES and "rsync" in bootstrap.APT_PACKAGES  # train --host needs them
