"""Undo / redo of review edits (segments, renames, labels, notes) with Qt's QUndoStack.

Each command holds the episode's field before and after the edit and writes through the dataset store, so undo
is just another atomic sidecar write; the edit itself has already been made (and may have failed) before the
command is pushed, so the stack only ever holds edits that happened."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtGui import QUndoCommand

Apply = Callable[[str, str, Any], None]  # (episode name, field, value) -> write it


class LabelEdit(QUndoCommand):
    """One edit of one field ("outcome", "notes" or "segments") of one episode."""

    def __init__(self, apply: Apply, name: str, field: str, before: Any, after: Any, text: str):
        super().__init__(text)
        self.apply, self.name, self.field, self.before, self.after = apply, name, field, before, after
        self._done = True  # pushed after the edit was made: the first redo() has nothing to do

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self.apply(self.name, self.field, self.after)

    def undo(self) -> None:
        self.apply(self.name, self.field, self.before)
