"""Questions the app asks before the arms do something the operator may not expect (stop, park, torque off).

One function, `ask`, shows them; tests replace it to answer. The choices map to session calls made elsewhere:
this module decides nothing about the arms.
"""
from __future__ import annotations

from PyQt6.QtWidgets import QMessageBox, QWidget


def ask(parent: QWidget | None, title: str, text: str, choices: list[tuple[str, str]], default: str) -> str | None:
    """Modal question; `choices` are (key, button text), the last one is the cancel. Returns the key chosen."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle(title)
    box.setText(text)
    buttons = {}
    for i, (key, label) in enumerate(choices):
        role = QMessageBox.ButtonRole.RejectRole if i == len(choices) - 1 else QMessageBox.ButtonRole.AcceptRole
        buttons[box.addButton(label, role)] = key
        if key == default:
            box.setDefaultButton(list(buttons)[-1])
    box.setEscapeButton(list(buttons)[-1])
    box.exec()
    return buttons.get(box.clickedButton(), choices[-1][0])


def before_arms_stop(parent: QWidget | None, ctl, what: str) -> str | None:
    """Before a disconnect or quitting: 'park' (stop what runs, sleep pose, torque off), 'torque_off' (limp where
    they stand: only offered while the e-stop holds them), or None (cancel). Asks only when there is something
    to decide: a mode driving the arms, or the e-stop engaged."""
    if not ctl.connected:
        return "park"
    if ctl.estopped:
        return ask(parent, f"{what}: e-stop engaged",
                   "The e-stop holds the followers, so they cannot move to their sleep pose.\n\n"
                   "Release the e-stop first to park them, or turn the torque off where they stand "
                   "(only with the arms resting on the table: they fall).",
                   [("torque_off", "Torque off here"), ("cancel", "Cancel")], "cancel")
    if ctl.teleop_running:
        mode = ctl.mode.value
        return ask(parent, f"{what} during {mode}",
                   f"{mode.capitalize()} is driving the arms. Stop it, move the followers to their sleep pose "
                   "and turn the torque off?",
                   [("park", "Stop and park"), ("cancel", "Cancel")], "cancel")
    return "park"
