"""Training on a SLURM cluster (`workbench train --slurm`, `workbench cluster ...`, the Train tab's "Run on").

  profile.py  ClusterProfile: the login node and the job's options, saved per cluster as TOML (what the Train tab
              shows: PROFILE_FIELDS has each field's label, help and CLI option)
  script.py   the batch script: srun one task per node, torchrun one process per GPU, requeue on USR1
  slurm.py    JobState / JobStatus (scontrol + the job log's trainer events), sbatch refusals as SubmitError
  jobs.py     submit_training, JobWatch / follow, cancel, fetch, log_tail (over SSH with finetune.launch's
              RemoteTarget, or on this machine when it is the login node)

No torch import in this package: the GUI uses it directly.
"""

from finetune.cluster.jobs import (JOB_RECORD, STATUS_RECORD, ClusterJob, JobWatch, Submission, cancel, connect,
                                   exit_code, fetch, follow, last_status, load_job, log_tail, submit_training)
from finetune.cluster.profile import (PROFILE_FIELDS, ClusterProfile, ProfileError, list_profiles, load_profile,
                                      profiles_dir, save_profile)
from finetune.cluster.script import JOB_SCRIPT, JobSpec, job_script
from finetune.cluster.slurm import (ClusterEvent, JobState, JobStatus, LogLine, SlurmError, SubmitError, parse_line,
                                    to_json)

__all__ = ["JOB_RECORD", "JOB_SCRIPT", "PROFILE_FIELDS", "ClusterEvent", "ClusterJob", "ClusterProfile", "JobSpec",
           "JobState", "JobStatus", "JobWatch", "LogLine", "ProfileError", "STATUS_RECORD", "SlurmError", "SubmitError",
           "Submission", "cancel", "connect", "exit_code", "fetch", "follow", "job_script", "last_status",
           "list_profiles", "load_job",
           "load_profile", "log_tail", "parse_line", "profiles_dir", "save_profile", "submit_training", "to_json"]
