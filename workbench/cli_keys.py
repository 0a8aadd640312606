"""Raw-mode keyboard for the arm-moving CLI commands: single keys, and one typed line after a prompt key."""
from __future__ import annotations

import os
import select
import sys
import threading


class RawKeys(threading.Thread):
    """Reads stdin in cbreak mode on its own thread (restored on exit). Subclasses answer `key(ch)` for single
    keys and `line(text)` for a line typed after `begin_line(prompt)` (Enter ends it; typed keys are echoed and
    are not commands meanwhile)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="keyboard")
        self._halt = threading.Event()
        self._typing: list[str] | None = None

    def key(self, ch: str) -> None:
        """One key press (no line being typed)."""

    def line(self, text: str) -> None:
        """A line typed after begin_line, Enter excluded, stripped."""

    def begin_line(self, prompt: str) -> None:
        self._typing = []
        print(prompt, end="", flush=True)

    def run(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not self._halt.is_set():
                if not select.select([fd], [], [], 0.1)[0]:
                    continue
                ch = os.read(fd, 1).decode(errors="ignore")
                if self._typing is None:
                    self.key(ch)
                elif ch in "\r\n":
                    text, self._typing = "".join(self._typing).strip(), None
                    print(flush=True)
                    self.line(text)
                else:
                    self._typing.append(ch)
                    print(ch, end="", flush=True)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)

    def stop(self) -> None:
        self._halt.set()
