"""Serving a policy, both sides of the wire: openpi's websocket + msgpack protocol with this project's extensions.

protocol (the wire format, shared by both sides; torch-free), server (`PolicyServer`: what `workbench serve` runs),
policies (what can be served: a trained pi0 folder or a replay folder), client (`RemotePolicy`: the robot side's
client; torch-free), chunks (the request / reply the robot side speaks). The launcher that starts a server as a
child process for the robot side is workbench.deploy.policy_launcher.
"""
