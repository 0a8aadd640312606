"""The deployment side: a policy drives the followers in recorded trials.

chunk_policy (the request/reply contract), policy_source (chunks -> per-tick actions), takeover (policy or
leaders), trials (the runner on the control thread), trials_service (what the CLI and the Trials tab share),
trial_stats, closed_loop. The control core (session, control, safety) knows none of this: it runs any
ActionSource.
"""
