"""Cameras: OpenCV/UVC, RealSense and simulated, behind `drivers.cameras.base.Camera`."""
