"""A SLURM cluster as the operator set it up once: how to reach its login node and what every job asks for.

Saved as TOML, one file per cluster, in the user's config folder ($XDG_CONFIG_HOME/aloha-workbench/clusters/NAME.toml,
else ~/.config/aloha-workbench/clusters/NAME.toml). `ClusterProfile` is what `workbench train --slurm NAME` reads
and what the Train tab shows: each field's metadata carries its label, help text and the CLI option that sets it
(`PROFILE_FIELDS`). No torch import (the GUI reads this).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SUFFIX = ".toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


class ProfileError(ValueError):
    """A profile value that cannot work; `field` names it (the CLI option is PROFILE_FIELDS[field].option)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _f(default: Any, label: str, help: str, option: str, **kw: Any) -> Any:
    return field(default=default, metadata={"label": label, "help": help, "option": option}, **kw)


@dataclass(frozen=True)
class ClusterProfile:
    """One cluster's connection and job defaults. Empty strings leave a value to the cluster's own default."""

    name: str = _f("", "Profile name", "the file's name in the clusters folder", "--save-profile")
    login: str = _f("", "Login node", "user@login-node or an ~/.ssh/config alias; empty: this machine is the "
                    "login node (sbatch runs here, no SSH)", "--slurm")
    remote_dir: str = _f("~/workbench-runs", "Remote folder", "working folder on the cluster's shared filesystem "
                         "(runs/, datasets/, bases/ and the hub cache live here)", "--remote-dir")
    partition: str = _f("", "Partition", "sbatch --partition (`sinfo -s` lists them)", "--partition")
    account: str = _f("", "Account", "sbatch --account (the allocation to charge)", "--account")
    qos: str = _f("", "QoS", "sbatch --qos", "--qos")
    nodes: int = _f(1, "Nodes", "nodes for the job (one torchrun per node)", "--nodes")
    gpus_per_node: int = _f(1, "GPUs per node", "GPUs per node, one training process each (0: CPU only)",
                            "--gpus-per-node")
    cpus_per_task: int = _f(8, "CPUs per node", "CPUs of the one task per node (data loading and threads)",
                            "--cpus-per-task")
    mem: str = _f("", "Memory per node", "sbatch --mem for the one task per node, e.g. 64G (empty: the "
                  "partition's default)", "--mem")
    time_limit: str = _f("", "Time limit", "sbatch --time, e.g. 12:00:00 or 2-00:00:00 (empty: the partition's); "
                         "a job that reaches it checkpoints and is requeued", "--time")
    constraint: str = _f("", "Constraint", "sbatch --constraint (node features, e.g. a100|h100)", "--constraint")
    extra_sbatch: tuple[str, ...] = _f((), "Extra #SBATCH lines", "more sbatch options, one per line "
                                       "(e.g. --exclusive, --reservation=lab)", "--sbatch")
    setup: tuple[str, ...] = _f((), "Environment set-up", "shell lines run before training on every node and "
                                "before the downloads on the login node (module load ..., conda activate ..., "
                                "source venv/bin/activate)", "--setup")
    container: str = _f("", "Apptainer image", "a .sif image on the cluster to train in (apptainer exec; --nv with "
                        "GPUs); empty: the set-up lines' environment", "--container")
    python: str = _f("python3", "Python", "the cluster's Python with the workbench installed (after the set-up "
                     "lines)", "--cluster-python")
    hf_home: str = _f("", "Hub cache", "HF_HOME on the shared filesystem for base checkpoints and the tokenizer "
                      "(downloaded on the login node; empty: REMOTE_DIR/hf-home)", "--hf-home")
    offline_nodes: bool = _f(True, "Compute nodes offline", "compute nodes have no network: hub downloads happen "
                             "on the login node before the job, the job runs with HF_HUB_OFFLINE=1",
                             "--online-nodes")
    requeue: bool = _f(True, "Requeue", "on preemption or before the time limit: checkpoint and requeue the job; "
                       "it resumes from the checkpoint", "--no-requeue")
    signal_lead_s: int = _f(300, "Signal lead (s)", "seconds before the time limit when SLURM signals the job to "
                            "checkpoint (sbatch --signal=B:USR1@N); also how long torchrun waits for it",
                            "--signal-lead")

    # ------------------------------------------------------------------------------------------ checks
    def check(self) -> "ClusterProfile":
        """Itself when every value can work; else a ProfileError naming the field and the fix."""
        if self.name and not _NAME.match(self.name):
            raise ProfileError("name", f"profile name {self.name!r}: use letters, digits, '.', '_' or '-'")
        for name in ("nodes", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ProfileError(name, f"{_opt(name)} must be 1 or more, not {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise ProfileError("gpus_per_node", f"--gpus-per-node must be 0 (CPU) or more, not {self.gpus_per_node}")
        if self.signal_lead_s < 0:
            raise ProfileError("signal_lead_s", "--signal-lead must be 0 or more seconds")
        if self.mem and not re.match(r"^\d+[KMGT]?B?$", self.mem, re.I):
            raise ProfileError("mem", f"--mem {self.mem!r}: a size like 64G or 500000M")
        if self.time_limit:
            secs = time_limit_s(self.time_limit)
            if secs is None:
                raise ProfileError("time_limit", f"--time {self.time_limit!r}: minutes, HH:MM:SS or D-HH:MM:SS")
            if self.requeue and secs <= self.signal_lead_s:
                raise ProfileError("signal_lead_s", f"--signal-lead {self.signal_lead_s} s is not below --time "
                                   f"{self.time_limit} ({secs} s): the job would be signalled as it starts")
        for name in ("partition", "account", "qos", "constraint", "mem", "time_limit", "container", "python",
                     "hf_home", "remote_dir", "login"):
            if any(c in getattr(self, name) for c in "\n\r"):
                raise ProfileError(name, f"{_opt(name)}: one line, no line breaks")
        for line in self.extra_sbatch:
            if not sbatch_option(line).startswith("-"):
                raise ProfileError("extra_sbatch", f"--sbatch {line!r}: an sbatch option such as --exclusive or "
                                   "--reservation=NAME")
        for line in (*self.extra_sbatch, *self.setup):
            if "\n" in line or "\r" in line:
                raise ProfileError("setup", f"{line!r}: one line each")
        if not self.python.strip():
            raise ProfileError("python", "--cluster-python: the command that starts Python on the cluster")
        return self

    def replace(self, **changes: Any) -> "ClusterProfile":
        """A copy with `changes` (None values are left out: an option not given keeps the profile's value)."""
        given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)

    @property
    def hub_cache(self) -> str:
        """HF_HOME of the jobs and the login-node downloads."""
        return self.hf_home or f"{self.remote_dir.rstrip('/')}/hf-home"

    # ------------------------------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        lines = ["# ALOHA workbench cluster profile (finetune/cluster/profile.py)"]
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            lines.append(f"# {f.metadata['label']}: {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def from_dict(d: dict[str, Any], name: str = "") -> "ClusterProfile":
        known = {f.name: f for f in dataclasses.fields(ClusterProfile)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ProfileError(unknown[0], f"unknown key {unknown[0]!r} in cluster profile {name or ''} (known: "
                               f"{', '.join(k for k in known if k != 'name')})")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            want = type(known[k].default)
            if want is tuple:
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ProfileError(k, f"{k}: a list of strings")
                v = tuple(v)
            elif want is bool:
                if not isinstance(v, bool):
                    raise ProfileError(k, f"{k}: true or false")
            elif want is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ProfileError(k, f"{k}: a whole number")
            elif not isinstance(v, str):
                raise ProfileError(k, f"{k}: a string")
            kw[k] = v
        return ClusterProfile(name=name, **{k: v for k, v in kw.items() if k != "name"}).check()


PROFILE_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(ClusterProfile)}


def _opt(name: str) -> str:
    return PROFILE_FIELDS[name].metadata["option"]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's


def sbatch_option(line: str) -> str:
    """An extra sbatch line without a leading '#SBATCH'."""
    s = line.strip()
    return s[len("#SBATCH"):].strip() if s.upper().startswith("#SBATCH") else s


def time_limit_s(text: str) -> int | None:
    """sbatch --time in seconds (None: not a time sbatch reads)."""
    m = _TIME.match(text.strip())
    if not m:
        return None
    days, a, b, c = m.groups()
    d = int(days or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, s = int(a), int(b or 0), int(c or 0)
    elif c is not None:  # HH:MM:SS
        h, mi, s = int(a), int(b), int(c)
    elif b is not None:  # MM:SS
        h, mi, s = 0, int(a), int(b)
    else:  # minutes
        h, mi, s = 0, int(a), 0
    return ((d * 24 + h) * 60 + mi) * 60 + s


# ------------------------------------------------------------------------------------------------ the folder
def profiles_dir() -> Path:
    """Where the profiles live ($XDG_CONFIG_HOME/aloha-workbench/clusters, else ~/.config/...)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aloha-workbench" / "clusters"


def profile_path(name: str, folder: Path | None = None) -> Path:
    return (folder or profiles_dir()) / f"{name}{SUFFIX}"


def list_profiles(folder: Path | None = None) -> list[str]:
    d = folder or profiles_dir()
    return sorted(p.stem for p in d.glob(f"*{SUFFIX}")) if d.is_dir() else []


def load_profile(name: str, folder: Path | None = None) -> ClusterProfile:
    """The saved profile `name`; a missing or broken file is a ProfileError that says which."""
    path = profile_path(name, folder)
    if not path.is_file():
        have = list_profiles(folder)
        raise ProfileError("name", f"no cluster profile {name!r} in {path.parent} (saved: "
                           f"{', '.join(have) if have else 'none'}); save one with `workbench train ... --slurm "
                           f"user@login-node --save-profile {name}`")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError("name", f"{path}: not valid TOML ({e})") from e
    try:
        return ClusterProfile.from_dict(data, name=name)
    except ProfileError as e:
        raise ProfileError(e.field, f"{path}: {e}") from e


def save_profile(profile: ClusterProfile, folder: Path | None = None) -> Path:
    """Writes the profile as NAME.toml (atomically) and returns the path."""
    profile.check()
    if not profile.name:
        raise ProfileError("name", "a profile needs a name to be saved (--save-profile NAME)")
    path = profile_path(profile.name, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(profile.to_toml())
    os.replace(tmp, path)
    return path


def iter_profiles(folder: Path | None = None) -> Iterator[ClusterProfile]:
    for name in list_profiles(folder):
        yield load_profile(name, folder)


__all__ = ["PROFILE_FIELDS", "ClusterProfile", "ProfileError", "iter_profiles", "list_profiles", "load_profile",
           "profile_path", "profiles_dir", "save_profile", "sbatch_option", "time_limit_s"]
