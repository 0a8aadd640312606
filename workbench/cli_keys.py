"""Raw-mode keyboard for the arm-moving CLI commands: single keys, one typed line after a prompt key, and the
e-stop (`with_estop`): e or space, and a lone Esc (as in the app) also while a line is being typed."""
from __future__ import annotations

import os
import select
import sys
import threading
from typing import Any

ESTOP_KEYS = ("e", " ")  # single keys that press the e-stop (not while a line is typed: then they are text)
ESC = "\x1b"
_SEQUENCE_S = 0.03  # an Esc followed this quickly by more bytes is an escape sequence (arrow keys...), not Esc


class RawKeys(threading.Thread):
    """Reads stdin in cbreak mode on its own thread (restored on exit). Subclasses answer `key(ch)` for single
    keys and `line(text)` for a line typed after `begin_line(prompt)` (Enter ends it; typed keys are echoed and
    are not commands meanwhile). With `with_estop(session)` e, space and Esc press the session's e-stop before
    any subclass sees them."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="keyboard")
        self._halt = threading.Event()
        self._typing: list[str] | None = None
        self._estop: Any = None

    def with_estop(self, session) -> "RawKeys":
        """e / space (and a lone Esc, also while typing) call `session.estop(...)`; returns self."""
        self._estop = session
        return self

    def key(self, ch: str) -> None:
        """One key press (no line being typed)."""

    def line(self, text: str) -> None:
        """A line typed after begin_line, Enter excluded, stripped."""

    def begin_line(self, prompt: str) -> None:
        self._typing = []
        print(prompt, end="", flush=True)

    def press_estop(self, how: str) -> None:
        if self._estop is None:
            return
        if self._typing is not None:  # a line being typed is dropped
            self._typing = None
            print(flush=True)
        try:
            self._estop.estop(f"{how} key (terminal)")
        except Exception as exc:  # noqa: BLE001 - say so; the operator still has Ctrl-C and the power switch
            print(f"E-STOP FAILED: {exc}", file=sys.stderr, flush=True)

    def feed(self, ch: str, more: bool = False) -> None:
        """One character read from the terminal (`more`: further bytes were already waiting right behind it)."""
        if ch == ESC:
            if not more:
                self.press_estop("Esc")
            return
        if self._typing is None:
            if self._estop is not None and ch in ESTOP_KEYS:
                self.press_estop("space" if ch == " " else ch)
            else:
                self.key(ch)
        elif ch in "\r\n":
            text, self._typing = "".join(self._typing).strip(), None
            print(flush=True)
            self.line(text)
        else:
            self._typing.append(ch)
            print(ch, end="", flush=True)

    def run(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            if self._estop is not None:
                print("  e / space / Esc: E-STOP", flush=True)
            while not self._halt.is_set():
                if not select.select([fd], [], [], 0.1)[0]:
                    continue
                ch = os.read(fd, 1).decode(errors="ignore")
                if ch == ESC and select.select([fd], [], [], _SEQUENCE_S)[0]:
                    os.read(fd, 16)  # the rest of an escape sequence: neither Esc nor keys
                    self.feed(ch, more=True)
                    continue
                self.feed(ch)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)

    def stop(self) -> None:
        self._halt.set()
