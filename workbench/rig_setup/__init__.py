"""First day with a real ALOHA: find the arms and cameras, name them for good, measure the grippers.

What `workbench rig detect | udev | calibrate | check` and the Rig tab's "Set up a new rig" wizard share; the
CLI and the wizard only ask the operator and show the results:

- serial_ports: USB serial adapters (U2D2 / FTDI) with their USB attributes and stable /dev/serial/by-id paths
- buses: ping a bus's Dynamixel IDs, recognize a leader (wx250s) or follower (vx300s), name missing / wrong servos
- cameras: RealSense devices (pyrealsense2) and V4L2 cameras with their stable by-id paths
- assign: which bus moved (left / right), which camera's image changed (its name)
- udev: rules keyed on serial numbers, the install command, the check that the names exist
- gripper_calibration: measured open / closed gripper readings, refused when inconsistent
- rig_file: the proposed rig TOML (stable paths, the measured [gripper] table)
- device_check: a rig file's devices absent vs. wrong
- setup: the steps in order (SetupSession), for the CLI and the wizard alike
"""
