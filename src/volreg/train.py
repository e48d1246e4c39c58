"""The training job: compose, seed, build data, model, callbacks, loggers and trainer; fit; test.

Run ``python train.py`` (or ``volreg-train``) with Hydra overrides, e.g.
``python train.py model=pytorch_default experiment=quick``.
"""

import logging
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from volreg.allocator import keep_freed_memory
from volreg.callbacks import DivergedError, ThroughputMeter
from volreg.distributed import is_global_zero, quiet_other_ranks, set_threads
from volreg.evaluation import write_predictions
from volreg.module import VolumeRegressor, regressor_from_settings
from volreg.preflight import (
    check_accelerator,
    check_checkpoint_file,
    check_model_settings,
    check_resume,
)
from volreg.results import RunRecord
from volreg.schema import register_schemas
from volreg.show import print_config

log = logging.getLogger(__name__)

# The configs live at the repository root, next to train.py.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one training job and return its best val/loss (inf if there is none), for sweepers."""
    return run(cfg)


def run(cfg: DictConfig) -> float:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # In a DDP job every process runs this function on the same output_dir; rank 0 writes.
    quiet_other_ranks()
    if is_global_zero():
        print_config(cfg, output_dir / "config.yaml")

    record = RunRecord(
        settings=OmegaConf.to_container(cfg.model, resolve=True),
        overrides=_overrides(),
        seed=cfg.seed,
        tags=list(cfg.tags),
    )
    started = time.perf_counter()
    try:
        train_and_test(cfg, record, output_dir)
        record.status = "completed"
    except DivergedError as error:
        log.error("run diverged: %s", error)
        record.status, record.error = "diverged", str(error)
        if not _in_multirun():
            # A sweep goes on after a diverged job; a single run exits non-zero for scripts.
            raise SystemExit(1) from error
    except (KeyboardInterrupt, SystemExit) as error:
        # Lightning turns Ctrl-C into SystemExit(1) after its graceful shutdown, and SIGTERM
        # (e.g. a cluster's preemption) into SIGTERMException, a SystemExit with code 0.
        record.status, record.error = "interrupted", "stopped by Ctrl-C or SIGTERM"
        if isinstance(error, SIGTERMException):
            raise SystemExit(128 + signal.SIGTERM) from error
        raise
    except Exception as error:
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        # Hydra prints the traceback once more when the exception leaves the job.
        log.error("run failed: %s: %s", type(error).__name__, error)
        log.debug("traceback:\n%s", traceback.format_exc())
        if not _in_multirun():
            raise
        if cfg.stop_on_error:
            # Hydra's launcher stores a job's Exception and runs the next job, so only an
            # exception outside Exception, like SystemExit, ends the sweep here.
            message = f"stop_on_error=true: stopping the sweep after a failed job: {error}"
            raise SystemExit(message) from error
        log.warning("stop_on_error=false: the sweep goes on with the next job")
        return float("inf")
    finally:
        record.wall_time_s = round(time.perf_counter() - started, 3)
        if is_global_zero():
            record.write(output_dir / "metrics.json")
            log.info("status %s; metrics written to %s", record.status, output_dir / "metrics.json")

    return record.best_val_loss if record.best_val_loss is not None else float("inf")


def train_and_test(cfg: DictConfig, record: RunRecord, output_dir: Path) -> None:
    # Until fit installs Lightning's handler, SIGTERM (a cluster's preemption) would end the
    # process at once. Inside this block it ends the run as interrupted, with metrics.json.
    with _sigterm_raises():
        set_threads(cfg.threads)
        if not isinstance(cfg.keep_freed_memory, bool):
            raise ValueError(
                f"invalid keep_freed_memory={cfg.keep_freed_memory!r}: expected true or false"
            )
        freed_memory_kept = keep_freed_memory() if cfg.keep_freed_memory else False
        log.info("seeding everything with seed=%d", cfg.seed)
        L.seed_everything(cfg.seed, workers=True)

        # Fail on a bad trainer or model setting, a missing checkpoint or GPU before the data is
        # built, which can take minutes. The trainer needs nothing from the data or the model.
        check_accelerator(cfg.trainer.accelerator)
        if cfg.ckpt_path:
            check_checkpoint_file(cfg.ckpt_path)
        throughput = ThroughputMeter()
        # A group entry set to null (callbacks.early_stopping=null) is left out.
        callbacks = [instantiate(item) for item in cfg.callbacks.values() if item is not None]
        loggers = [instantiate(item) for item in cfg.logger.values() if item is not None]
        callbacks.append(throughput)
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
        check_model_settings(
            OmegaConf.to_container(cfg.model, resolve=True), trainer.strategy.root_device
        )

        log.info("building the data module (data.source=%s)", cfg.data.source)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")

        log.info(
            "building the model: in_channels=%d, volume_shape=%s, num_targets=%d",
            datamodule.in_channels,
            list(datamodule.volume_shape),
            datamodule.num_targets,
        )
        module = build_module(cfg, datamodule)
        if cfg.train and cfg.ckpt_path:
            check_resume(cfg.ckpt_path, module.hparams.settings)

    try:
        if cfg.train:
            log.info("fitting for up to %s epochs", cfg.trainer.max_epochs)
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    finally:
        record.set_history(module.val_history)
        record.epochs_run = trainer.current_epoch
        record.train_samples_per_s = throughput.samples_per_second
        # Read after fit: Lightning's DDP launcher may change the thread count.
        record.speed_settings = {
            "device": trainer.strategy.root_device.type,
            "processes": trainer.world_size,
            "precision": trainer.precision,
            "batch_size_per_process": cfg.data.batch_size,
            "threads_per_process": torch.get_num_threads(),
            "keep_freed_memory": freed_memory_kept,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32": module.tf32,
        }

    has_test_split = datamodule.describe().split_sizes.get("test", 0) > 0
    if cfg.test and not has_test_split:
        log.warning(
            "the data has no test split, so the run is not tested; set test=false to "
            "skip testing without this warning"
        )
    if cfg.test and has_test_split:
        test_best(trainer, module, datamodule, record, output_dir, cfg.ckpt_path)
    if cfg.test:
        log_hyperparameters(trainer, cfg, record)
        # Each trainer stage closes the loggers at its end, so what is logged after the last
        # stage sits in a new writer's buffer until it is closed too.
        for logger in trainer.loggers:
            logger.finalize("success")


@contextmanager
def _sigterm_raises():
    """Raise Lightning's SIGTERMException on SIGTERM inside the block (main thread only).

    Lightning's own handler, installed for fit, calls the handler it finds, so this one is
    removed before fit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SIGTERMException()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_module(cfg: DictConfig, datamodule) -> VolumeRegressor:
    """Build the module from ``cfg.model``, with the network sized from the data."""
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    settings["net"].update(
        in_channels=datamodule.in_channels,
        volume_shape=list(datamodule.volume_shape),
        num_targets=datamodule.num_targets,
    )
    return regressor_from_settings(
        settings, target_mean=datamodule.target_mean, target_std=datamodule.target_std
    )


def test_best(
    trainer: L.Trainer,
    module: VolumeRegressor,
    datamodule,
    record: RunRecord,
    output_dir: Path,
    ckpt_path: str | None = None,
) -> None:
    """Test the best checkpoint, then write its predictions and the pred-vs-true plot.

    Without a checkpoint saved by this fit (train=false), ``ckpt_path`` is tested instead.
    """
    # NOTE: after a resume into a new run directory, ModelCheckpoint's best covers only this
    # directory, while metrics.json's best_val_loss covers the checkpoint's whole history.
    checkpoint = trainer.checkpoint_callback
    best = (checkpoint.best_model_path if checkpoint is not None else "") or ckpt_path
    if best and not Path(best).is_file():
        # A resumed checkpoint can name a best file that its run was stopped before writing.
        log.warning("the best checkpoint %s is missing: testing the current weights", best)
        best = None
    elif best:
        log.info("testing the checkpoint %s", best)
    else:
        log.info("no checkpoint was saved (fast_dev_run): testing the current weights")
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
    record.test = {name: float(value) for name, value in results[0].items()} if results else {}
    write_predictions(trainer, module, datamodule, output_dir)


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig, record: RunRecord) -> None:
    """Log the settings with the final metrics, so TensorBoard's HParams compares real values."""
    params = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "seed": cfg.seed,
        "tags": ",".join(cfg.tags),
        "data": {
            "source": cfg.data.source,
            "shuffle": cfg.data.shuffle,
            "batch_size": cfg.data.batch_size,
            "standardize": cfg.data.standardize,
        },
    }
    metrics = {f"hp/{name.replace('/', '_')}": value for name, value in record.test.items()}
    if record.best_val_loss is not None:
        metrics["hp/best_val_loss"] = record.best_val_loss
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
        else:
            logger.log_hyperparams(params)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _overrides() -> list[str]:
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


# DDP child processes run this module (python -m volreg.train), see volreg.distributed.
if __name__ == "__main__":
    main()
