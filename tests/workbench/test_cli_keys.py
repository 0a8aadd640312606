"""The CLI's raw keyboard (recording and trials) on a real pseudo-terminal: single keys are commands, a typed line
after its prompt key is text (its letters are not commands), and the terminal mode is restored."""
import os
import subprocess
import sys
import time
from pathlib import Path

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
