"""The set-up pieces the wizard and the CLI share (workbench.rig_setup.setup / udev), with real parts: the teleop
check on the virtual rig (TrackingMeter), the emulated operator, camera naming order, the udev names checked."""
from __future__ import annotations

from workbench.config import load_rig_config
from workbench.rig_setup import setup, udev
from workbench.rig_setup.cameras import DetectedCamera


def test_teleop_check_on_the_virtual_rig_tracks():
    check = setup.teleop_check("virtual", steps=60)
    assert check.ok and check.ticks == 60 and 0 <= check.median_error <= check.max_error
    assert "teleop check OK" in check.describe()


def test_emulated_operator_moves_only_the_arm_asked_for():
    op = setup.EmulatedOperator()
    ports = op.start()
    try:
        det = setup.detect(ports, timeout_ms=50)
        assert det.problems() == [] and {op.arm_at(p) for p in ports} == set(op.rig.paths)
        session = setup.SetupSession(det, backend="virtual")
        stopped = []
        with session.arm_watch("follower", timeout_ms=50) as watch:
            watch.baseline()
            assert max(watch.watch(5.0, should_stop=lambda: True).values()) == 0.0  # stopped before a sample
            with op.moving("follower", "right"):
                changes = watch.watch(5.0, on_sample=stopped.append)
        assert stopped and session.assign_moved("follower", "right", changes) == op.rig.paths["follower_right"]
        assert session.sides[op.rig.paths["follower_left"]] == "left"
    finally:
        op.stop()


def test_cameras_are_named_in_order_and_the_last_needs_no_wave():
    cams = [DetectedCamera("opencv", f"/dev/v4l/by-id/cam{i}", device=f"/dev/video{2 * i}") for i in range(3)]
    session = setup.SetupSession(setup.Detection([], [], cams))
    assert session.next_camera_name() == "cam_high" and session.name_last_camera() is None
    session.assign_changed_camera("cam_high", {c.ident: (40.0 if i == 1 else 1.0) for i, c in enumerate(cams)})
    assert session.next_camera_name() == "cam_low" and session.name_last_camera() is None
    session.assign_changed_camera("cam_low", {cams[0].ident: 30.0, cams[2].ident: 2.0})
    assert session.name_last_camera() == cams[2].ident
    assert session.camera_names[cams[2].ident] == "cam_left_wrist" and session.next_camera_name() is None


def test_expected_udev_names_of_a_rig_file(tmp_path):
    cfg = load_rig_config("aloha")
    names = udev.expected_names(cfg)
    assert [n.path for n in names if n.subsystem == "tty"] == [f"/dev/ttyDXL_{a.name}" for a in cfg.arms]
    assert all(n.name == c.name.upper() for n, c in zip([n for n in names if n.subsystem != "tty"],
                                                         [c for c in cfg.cameras if c.kind == "opencv"]))
    (tmp_path / names[0].name).touch()
    assert udev.missing_names(names, str(tmp_path)) == [str(tmp_path / n.name) for n in names[1:]]
