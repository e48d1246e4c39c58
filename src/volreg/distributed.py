"""Several processes per job and several jobs per machine, under Hydra.

Lightning's DDP strategy starts the other processes of a job by running the script again.
Lightning 2.6 repeats ``sys.argv`` for them, so a child of a multirun job (``-m``) would start
the whole sweep again with its own output directories. ``HydraDDPStrategy`` starts each child
as a single run of this job's overrides in this job's output directory instead.
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Hydra overrides that configure the sweep or name the output files, not the job itself.
# The child processes run the job as a single run, with their own values for these.
SWEEP_SETTINGS = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra/launcher",
    "hydra.launcher",
    "hydra/sweeper",
    "hydra.sweeper",
    "hydra.job.name",
    "hydra.output_subdir",
)

# Set once this process has started DDP child processes, which Lightning does once per
# process: the environment variables it sets make a later Trainer expect its peers already.
_children_started = False


def is_global_zero() -> bool:
    """Return whether this process is rank 0, the one that writes the run's files.

    Lightning reads the rank from the environment (LOCAL_RANK, SLURM_PROCID, ...) when it is
    imported, and sets the global rank when the strategy connects. So this is correct before
    the Trainer exists on one node and under SLURM, and everywhere once fit has started.
    """
    return rank_zero_only.rank == 0


def quiet_other_ranks() -> None:
    """Keep INFO lines to rank 0; the other ranks still log warnings and errors.

    This sets the root logger, because a DDP child runs volreg.train as ``__main__``.
    """
    if not is_global_zero():
        logging.getLogger().setLevel(logging.WARNING)


def child_command(hydra_cfg: DictConfig, job_name: str) -> list[str]:
    """Build the command that runs this Hydra job again as one more process of its DDP group.

    The child is a single run (no ``-m``) of the job's own overrides, with ``hydra.run.dir``
    set to this job's output directory, so ``paths.output_dir`` is the same in every process,
    and with ``hydra.output_subdir=null``, so only the parent writes ``.hydra/``.
    """
    command = [sys.executable, "-m", "volreg.train", f"--config-name={hydra_cfg.job.config_name}"]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            command.append(f"--config-path={source.path}")
        elif source.provider == "command-line" and source.schema == "file":
            command.append(f"--config-dir={source.path}")

    command += list(hydra_cfg.overrides.task)
    command += [
        override for override in hydra_cfg.overrides.hydra if not _configures_sweep(override)
    ]
    command += [
        f"hydra.run.dir={_quote(hydra_cfg.runtime.output_dir)}",
        f"hydra.job.name={job_name}",
        "hydra.output_subdir=null",
    ]
    return command


def _configures_sweep(override: str) -> bool:
    parsed = OverridesParser.create().parse_override(override)
    key = parsed.key_or_group
    return any(key == setting or key.startswith(setting + ".") for setting in SWEEP_SETTINGS)


def _quote(value: str) -> str:
    """Quote a value for Hydra's override grammar, so paths with spaces or commas survive."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Start the other local processes of a DDP job as single runs of the same Hydra job.

    Outside a Hydra job it behaves like Lightning's launcher.
    """

    def _call_children_scripts(self) -> None:
        global _children_started
        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return

        # The environment mirrors _SubprocessScriptLauncher._call_children_scripts of
        # Lightning 2.6; only the command and its working directory differ.
        self._check_can_spawn_children()
        self.procs = []
        environment = self.cluster_environment
        os.environ["MASTER_ADDR"] = environment.main_address
        os.environ["MASTER_PORT"] = str(environment.main_port)
        os.environ["NODE_RANK"] = str(environment.node_rank())
        os.environ["LOCAL_RANK"] = str(environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)

        hydra_cfg = HydraConfig.get()
        for local_rank in range(1, self.num_processes):
            global_rank = environment.node_rank() * self.num_processes + local_rank
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            command = child_command(hydra_cfg, f"{hydra_cfg.job.name}_rank{global_rank}")
            log.debug("starting DDP process %d: %s", global_rank, command)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=hydra_cfg.runtime.cwd))
        _children_started = True


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP strategy, with child processes that stay inside the Hydra job.

    Under SLURM (and torchrun) the processes are started by the cluster, so no children are
    started and this is Lightning's DDPStrategy.
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if not isinstance(self._launcher, _SubprocessScriptLauncher):
            return
        if _children_started:
            raise RuntimeError(
                "this process already ran a DDP job, and Lightning starts DDP processes only "
                "once per process: run DDP jobs of a sweep with hydra/launcher=submitit_local "
                "or submitit_slurm, which start each job in a new process"
            )
        self._launcher = HydraJobLauncher(
            self.cluster_environment, self.num_processes, self.num_nodes
        )


def resolve_threads(setting: int | str | None) -> int | None:
    """Return the torch threads per process for ``threads``, or None to keep the default.

    ``auto`` divides the CPUs among the jobs that a Hydra launcher runs side by side:
    cpus // n_jobs under ``hydra/launcher=joblib``, and ``hydra.launcher.cpus_per_task``
    under the submitit launchers where it is set. Elsewhere it keeps PyTorch's default
    (Lightning's DDP launcher divides the CPUs among its processes by itself).
    """
    if setting is None:
        return None
    if setting == "auto":
        return _threads_for_launcher()
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"invalid threads={setting!r}: expected a positive integer, auto or null")
    return setting


def _threads_for_launcher() -> int | None:
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None

    launcher = hydra_cfg.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        cpus = len(os.sched_getaffinity(0))
        n_jobs = int(launcher.get("n_jobs") or -1)
        # joblib counts negative n_jobs from the CPU count: -1 is all CPUs, -2 all but one.
        parallel = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)
        return max(1, cpus // parallel)
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def set_threads(setting: int | str | None) -> None:
    """Apply the ``threads`` setting to this process and to the processes it starts."""
    threads = resolve_threads(setting)
    if threads is None:
        return
    torch.set_num_threads(threads)
    # DDP children and DataLoader workers read OMP_NUM_THREADS; Lightning's DDP launcher
    # keeps it when it is set instead of dividing the CPUs itself.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    log.info("threads=%s: %d torch thread(s) per process", setting, threads)


class CreateFolders(Callback):
    """Hydra callback that creates folders before a multirun starts.

    The Optuna sweeper opens its SQLite storage before any job runs, and SQLite does not
    create the folder of its file.
    """

    def __init__(self, folders: list[str]) -> None:
        self.folders = [Path(folder) for folder in folders]

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
