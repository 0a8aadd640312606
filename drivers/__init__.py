"""Talking to hardware and to the simulator: Dynamixel arms, cameras, the MuJoCo ALOHA rig.

Nothing here knows about episodes, models or Qt. The contracts every backend implements live in
`drivers.arm` (Arm, ArmState), `drivers.cameras.base` (Camera, Frame) and `drivers.clock` (Clock).
"""
