"""The deployment side: a policy drives the followers in recorded trials.

chunk_policy (the ChunkPolicy protocol the policy source calls), policy_launcher (a policy folder served by a
loopback `workbench serve` child, or a remote server, opened and checked against the rig), policy_source (chunks
-> per-tick actions: sync / async / rtc / ensemble), takeover (policy or leaders), trials (the runner on the
control thread), trials_service (what the CLI and the Trials tab share), trial_stats, closed_loop. The control core
(session, control, safety) knows none of this: it runs any ActionSource. The wire protocol and the client live in
serving/.
"""
