"""Dynamixel Protocol 2.0: packet codec, X-series control table, the bus over dynamixel-sdk, and a servo
emulator that answers the real SDK over a pseudo-terminal (tests and the virtual rig)."""
