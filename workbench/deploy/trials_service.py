"""The trials service: what `workbench trials` and the GUI's Trials tab both do, written once.

From a `TrialsRequest` (what the operator typed: command-line flags or the tab's fields) to trial episodes: the
seeds parsed and checked before anything starts, the policy opened (`open_policy`: a local server child process for
a folder or hub id, a client for a ws:// URL), the prompt taken from the policy's metadata when none was given, the
policy's identity, the default dataset (one rule, `default_dataset`), the store and the `TrialSettings` (a
`TrialsPlan`, shown by the front end), the `TrialRunner` run on a `RigSession` as a generic control-thread job, and
the policy (with its server process) closed on every path. Front ends show the plan, follow the runner's typed
events (workbench.events) and forward the operator's commands; they decide nothing a CLI user would miss. The
rig's `[safety]` says how old a chunk may be and how many refused chunks in a row abort a trial (the policy
source applies both, and sets the client's reply timeout from the first; a `--delay-ticks` beyond the age limit
is refused here, before anything starts).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from workbench.deploy.policy_source import ExecConfig, check_delay
from workbench.deploy.trials import TrialResult, TrialRunner, TrialSettings, policy_identity, start_trials

if TYPE_CHECKING:
    from recorder.recovery import RecoveryResult
    from recorder.store import DatasetStore
    from workbench.config import RigConfig
    from workbench.deploy.chunk_policy import ChunkPolicy
    from workbench.deploy.trial_stats import TrialRecord
    from workbench.session import RigSession

log = logging.getLogger(__name__)

# Simulated trials are held out from the training scenes: unless seeds are given they start here (demonstrations
# recorded with `workbench record` start at 0), skipping any seed the policy was trained on.
TRIAL_SEED_BASE = 100_000
# Where datasets live unless the front end knows better (the GUI's Record tab defaults to <this>/default).
DEFAULT_DATA_ROOT = Path.home() / "aloha_data"
API_KEY_ENV = "WORKBENCH_API_KEY"


class TrialsError(ValueError):
    """A request the operator can fix (no policy, too few seeds, no prompt): said in words, before the arms move."""


class TrialsCancelled(RuntimeError):
    """The service was closed while the policy was being opened: the policy was closed again."""


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """'100-104' -> (100..104); '3,5,8' -> (3, 5, 8); mixed allowed; empty -> None (continue the dataset's)."""
    if not text or not text.strip():
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise TrialsError(f"seeds {text!r}: use a range like 100-119 or a list like 3,5,8") from None
    return tuple(out)


def default_dataset(policy_id: str, data_root: str | Path | None = None) -> Path:
    """The one default for trial episodes: `<data root>/trials/<policy name>`, next to the recording datasets.
    The GUI's data root is its recording dataset's parent folder, the CLI's `--data-root`; both default to
    `DEFAULT_DATA_ROOT`, so the same policy lands in the same folder from either."""
    root = Path(data_root).expanduser() if data_root else DEFAULT_DATA_ROOT
    return root / "trials" / policy_id.replace("@", "_").replace("/", "_")


@dataclass(frozen=True)
class TrialsRequest:
    """What the operator asks for, as typed; empty fields take the service's defaults."""

    policy: str  # policy folder, hub id, or ws:// URL of a policy server
    trials: int = 10
    prompt: str = ""  # "": the task the policy was trained on (its metadata)
    dataset: str | Path | None = None  # None / "": default_dataset(policy id, data_root)
    data_root: str | Path | None = None  # where the default dataset goes (None: DEFAULT_DATA_ROOT)
    seeds: str = ""  # simulator: "100-119" / "3,5,8"; "": continue after the dataset's; ignored on hardware
    execution: ExecConfig = ExecConfig()
    time_limit_s: float = 20.0
    takeover: bool = True  # leaders follow the followers; a squeeze or the pedal takes over
    device: str = "auto"  # inference device of a local policy server
    api_key: str | None = field(default=None, repr=False)  # remote server's key (default: $WORKBENCH_API_KEY)
    tls_ca: str | Path | None = None  # CA file a wss:// server's certificate is checked against ($WORKBENCH_TLS_CA)
    allow_sim_policy: bool = False  # run a policy trained on a simulator on real arms (sim-to-real, on purpose)
    policy_config: str | None = None  # how an openpi checkpoint was trained (`workbench serve --config`)

    @property
    def spec(self) -> str:
        return str(self.policy).strip()

    @property
    def remote(self) -> bool:
        return self.spec.startswith(("ws://", "wss://"))

    def check(self, sim: bool) -> tuple[int, ...] | None:
        """The seeds for a simulated rig (None on hardware, or to continue the dataset's); raises TrialsError for
        what is wrong before any policy is opened."""
        if not self.spec:
            raise TrialsError("choose a policy: a policy folder (Train → Use in trials), a hub id, or the ws:// "
                              "address of a policy server")
        if self.trials < 1:
            raise TrialsError(f"at least one trial, got {self.trials}")
        if self.time_limit_s <= 0:
            raise TrialsError(f"the time limit must be positive, got {self.time_limit_s} s")
        seeds = parse_seeds(self.seeds) if sim else None
        if seeds is not None and len(seeds) < self.trials:
            raise TrialsError(f"{self.trials} trials need {self.trials} seeds, got {len(seeds)}")
        return seeds


@dataclass(frozen=True)
class TrialsPlan:
    """What will run, resolved from the request and the policy's metadata (front ends show it)."""

    request: TrialsRequest
    policy_id: str  # "cube@2000": the statistics' name
    checkpoint: str | int | None
    prompt: str
    dataset: Path
    seeds: tuple[int, ...] | None
    settings: TrialSettings
    policy_type: str = "policy"
    trained_task: str | None = None
    training_seeds: tuple[int, ...] | None = None  # the simulator scenes it was trained on (None: unknown)
    overlap: tuple[int, ...] = ()  # trial seeds among them: those trials are marked, they test memory

    def describe(self) -> str:
        """"cube@2000 · pi0 · trained on “transfer the cube”"."""
        return f"{self.policy_id} · {self.policy_type}" + \
            (f" · trained on “{self.trained_task}”" if self.trained_task else "")

    def seeds_text(self) -> str:
        """What the seeds are against the training scenes, one line for the operator ("" on a real rig)."""
        if self.seeds is None:
            return ""
        span = _span(self.seeds)
        if self.overlap:
            return (f"WARNING: trial seeds {_span(self.overlap)} are scenes the policy was trained on: those trials "
                    f"test memory, not generalization (marked `training_scene` in their records); seeds {span}")
        if self.training_seeds is None:
            return f"seeds {span} (the training scenes are unknown: overlap not checked)"
        return f"seeds {span}, held out (trained on {len(self.training_seeds)} scenes" + \
            (f", {_span(self.training_seeds)})" if self.training_seeds else ")")


def plan_trials(request: TrialsRequest, metadata: dict[str, Any], seeds: tuple[int, ...] | None) -> TrialsPlan:
    """The request's defaults filled in from the policy's metadata: the prompt, the identity, the dataset."""
    meta = dict(metadata or {})
    trained = meta.get("task") or meta.get("prompt")
    prompt = request.prompt.strip() or str(trained or "")
    if not prompt:
        raise TrialsError("the policy does not say which task it was trained on: give a prompt")
    pid, step = policy_identity(meta, request.spec)
    dataset = Path(request.dataset).expanduser() if request.dataset and str(request.dataset).strip() else \
        default_dataset(pid, request.data_root)
    settings = TrialSettings(prompt=prompt, trials=request.trials, time_limit_s=request.time_limit_s,
                             execution=request.execution, seeds=seeds, takeover=request.takeover,
                             policy=request.spec, policy_id=pid, checkpoint=step)
    return TrialsPlan(request, pid, step, prompt, dataset, seeds, settings,
                      str(meta.get("policy_type") or meta.get("model") or "policy"),
                      str(trained) if trained else None)


def _span(seeds) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds[:8])) + (" ..." if len(seeds) > 8 else "")


def training_seeds(spec: str, metadata: dict[str, Any] | None) -> tuple[int, ...] | None:
    """The simulator scenes the policy was trained on: what its server announces ("train_sim_seeds"), else what a
    local policy folder says (finetune.policy_meta); None when unknown."""
    announced = (metadata or {}).get("train_sim_seeds")
    if isinstance(announced, list):
        return tuple(sorted(int(x) for x in announced))
    if spec.startswith(("ws://", "wss://")):
        return None
    from finetune.policy_meta import training_sim_seeds

    found = training_sim_seeds(spec)
    return None if found is None else tuple(found)


def held_out(plan: TrialsPlan, store: "DatasetStore", train: tuple[int, ...] | None) -> TrialsPlan:
    """Simulated trials: without given seeds, the next `trials` seeds from TRIAL_SEED_BASE (or after this trials
    dataset's own) that the policy was not trained on; with given seeds, those, and the ones it was trained on noted
    (warned, and marked in each trial's record)."""
    from workbench.recording import next_sim_seed

    seeds = plan.seeds
    known = set(train or ())
    if seeds is None:
        out, s = [], max(TRIAL_SEED_BASE, next_sim_seed(store))
        while len(out) < plan.request.trials:
            if s not in known:
                out.append(s)
            s += 1
        seeds = tuple(out)
    overlap = tuple(sorted(set(seeds) & known))
    settings = dataclasses.replace(plan.settings, seeds=seeds, training_seeds=train)
    return dataclasses.replace(plan, seeds=seeds, settings=settings, training_seeds=train, overlap=overlap)


class TrialsService:
    """One trials session: `open` (blocking: a worker thread or the CLI), `start` on a RigSession, the runner's
    commands, `close` (any thread, idempotent: the policy and its server process go)."""

    def __init__(self, request: TrialsRequest, rig_config: "RigConfig"):
        self.request = request
        self.rig_config = rig_config
        self.seeds = request.check(sim=rig_config.backend == "sim")  # fails before a server process starts
        try:  # a simulated latency beyond the chunk age limit would refuse every chunk
            check_delay(request.execution, rig_config.safety.max_chunk_age_s, rig_config.control_hz)
        except ValueError as exc:
            raise TrialsError(str(exc)) from None
        self.policy: ChunkPolicy | None = None
        self.plan: TrialsPlan | None = None
        self.store: DatasetStore | None = None
        self.runner: TrialRunner | None = None
        self.recovered: "RecoveryResult | None" = None  # what `use` recovered of the dataset's crashed recordings
        self._lock = threading.Lock()
        self._closed = False

    # -- opening ---------------------------------------------------------------------------------------------
    def open(self, log: Callable[[str], None] | None = None) -> TrialsPlan:
        """Start (or reach) the policy server, then resolve the plan and open the store; `log` gets the server's
        output lines. On any failure, and when `close()` came meanwhile, the policy is closed again."""
        from workbench.deploy.policy_launcher import open_policy

        req = self.request
        api_key = req.api_key or os.environ.get(API_KEY_ENV)
        policy = open_policy(req.spec, rig=self.rig_config, api_key=api_key, device=req.device, log=log,
                             tls_ca=req.tls_ca, allow_sim_policy=req.allow_sim_policy,
                             policy_config=req.policy_config)
        with self._lock:
            closed = self._closed
            if not closed:
                self.policy = policy
        if closed:
            _close_quietly(policy)
            raise TrialsCancelled("the trials were closed while the policy was being opened")
        try:
            return self.use(policy)
        except BaseException:
            self.close()
            raise

    def use(self, policy: "ChunkPolicy") -> TrialsPlan:
        """An already open policy (in-process tests, a caller that serves it itself): the plan and the store. The
        service closes it with everything else."""
        from recorder.store import DatasetStore, StoreError

        self.policy = policy
        self.plan = plan_trials(self.request, dict(getattr(policy, "metadata", {}) or {}), self.seeds)
        store = DatasetStore(self.plan.dataset)
        # its own crashed trials first: recovered as the trials they were (their marker is in the journal)
        self.recovered = store.recover()
        if self.rig_config.backend == "sim":
            self.plan = held_out(self.plan, store, training_seeds(self.request.spec, getattr(policy, "metadata", {})))
        cfg = self.rig_config
        try:  # before any motion: one trial's episode and the recorder's reserve must fit on the disk
            store.require_space(int(self.request.time_limit_s * cfg.control_hz) + 1, len(cfg.cameras), "a trial")
        except StoreError as exc:
            raise TrialsError(str(exc)) from None
        self.store = store
        return self.plan

    @property
    def server_pid(self) -> int | None:
        """The local policy server's process id (None for a remote server)."""
        server = getattr(self.policy, "server", None)
        proc = getattr(server, "proc", None)
        return proc.pid if proc is not None else None

    # -- running ---------------------------------------------------------------------------------------------
    def start(self, session: "RigSession") -> TrialRunner:
        """The trials on the session's control thread (mode TRIAL); `session.stop()` / the e-stop end them."""
        if self.plan is None or self.policy is None or self.store is None:
            raise RuntimeError("open the policy first")
        runner = TrialRunner(session.rig, self.store, self.policy, self.plan.settings)
        start_trials(session, runner)
        self.runner = runner
        return runner

    @property
    def results(self) -> list[TrialResult]:
        return list(self.runner.results) if self.runner is not None else []

    def label(self, index: int, outcome: str, notes: str | None = None) -> TrialResult:
        """The operator's outcome and note for a trial of this session (as soon as its TrialEnded was seen)."""
        if self.runner is None:
            raise RuntimeError("no trials ran")
        return self.runner.label(index, outcome, notes)

    def unlabeled(self) -> list[TrialResult]:
        """Trials waiting for the operator's outcome (real rigs: no simulator to judge)."""
        return [r for r in self.results if r.outcome == "unlabeled"]

    def records(self) -> list["TrialRecord"]:
        """This session's trials as the statistics read them from the dataset (labels applied)."""
        from workbench.deploy.trial_stats import load_trials

        if self.store is None:
            return []
        names = {r.name for r in self.results}
        return [t for t in load_trials(self.store.root) if t.name in names]

    # -- closing ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the policy client and a local server's child process (SIGTERM, then SIGKILL after 5 s). Any
        thread; a later `open` closes what it opens."""
        with self._lock:
            self._closed = True
            policy, self.policy = self.policy, None
        if policy is not None:
            _close_quietly(policy)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "TrialsService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_quietly(policy) -> None:
    try:
        policy.close()
    except Exception as exc:  # noqa: BLE001 - closing on the way out never masks what ended the trials
        log.error("closing the policy: %s", exc)


__all__ = ["DEFAULT_DATA_ROOT", "TRIAL_SEED_BASE", "TrialsCancelled", "TrialsError", "TrialsPlan", "TrialsRequest", "TrialsService",
           "default_dataset", "held_out", "parse_seeds", "plan_trials", "training_seeds"]
