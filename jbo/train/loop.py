"""The training loop: setup, then dispatches of many steps, evaluations and checkpoints on a
schedule.

The training rows are uploaded once; each dispatch (:func:`jbo.train.step.run_steps`) runs up to
``log_every`` steps on the device and returns their metrics in one transfer. Validations run
every ``eval_every`` steps (default: once per epoch), checkpoints after them at most every
``checkpoint_seconds`` (or every ``checkpoint_every`` steps), and always at the end.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e), the regularizer's
clusters and PRNG key at step t are functions of (seed, t), and the checkpoint is the whole
:class:`~jbo.train.state.TrainState`. Resuming from step t therefore replays steps t+1.. bit for
bit (float64, same device count).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jbo.data.batch import Batch, pad_records
from jbo.data.records import Record, check_records
from jbo.models.model import Model
from jbo.train import dataset as ds
from jbo.train import sharding
from jbo.train.checkpoints import Checkpoints
from jbo.train.config import TrainConfig
from jbo.train.constants import resolve_hypers
from jbo.train.convergence import after_evaluation
from jbo.train.metrics import MetricsLog
from jbo.train.planner import Planner
from jbo.train.model import create_module, init_params
from jbo.train.runs import check_resumable, lock_run_dir, prepare_out_dir, run_meta
from jbo.train.state import SUM_KEYS, TrainState
from jbo.train.step import OptSpec, StepSpec, eval_sums, init_opt, run_steps

__all__ = ["train", "TrainResult", "TrainingDiverged", "evaluate", "Run", "setup"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the message names the batch, the last checkpoint is kept."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns; ``model`` is the trained :class:`jbo.models.Model` with the
    parameters of the lowest validation MAE (the final ones without validation data), ready for
    the engine, ``jbo.analysis`` and ``jbo.models.save``; ``model.replace(params=params)`` is
    the one after the last step."""

    params: Any  # parameters after the last step
    model: Model  # the best parameters (meta {}, step -1)
    config: TrainConfig
    history: list[dict[str, float]]  # one row per evaluation (see MetricsLog.EPOCH_FIELDS)
    steps: list[dict[str, float]]  # one row per optimizer step
    data: ds.Datasets
    stop_reason: str
    seconds: float
    state: TrainState | None = None  # the final training state (host arrays)


@dataclasses.dataclass
class Run:
    """Everything :func:`train` sets up: data on the device, the compiled step's spec, state."""

    config: TrainConfig
    data: ds.Datasets
    model: Model  # the initial parameters; the step's spec holds it without them
    spec: StepSpec
    mesh: Any
    state: TrainState
    train_dev: Batch  # device-resident padded training rows
    reg_dev: Batch | None  # device-resident regularizer clusters (None without regularizer)
    val_dev: list  # device-resident validation chunks
    batch: int  # rows per step (before padding to the device count)
    batch_dev: int
    reg_size: int
    n_batches: int  # steps per epoch
    total_steps: int
    ckpt: Checkpoints | None
    meta: dict
    has_forces: bool
    lock: Any = None  # the run folder's lock file (jbo.train.runs.lock_run_dir), held till close

    def close(self) -> None:
        """Release the run folder (checkpoint manager and lock); idempotent."""
        if self.ckpt is not None:
            self.ckpt.close()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def setup(config: TrainConfig, module=None, records: list[Record] | None = None) -> Run:
    """Lock the run folder, read and split the data, build the model, upload the arrays,
    restore a checkpoint. The caller releases the folder with :meth:`Run.close`."""
    lock = lock_run_dir(config.out_dir) if config.out_dir else None
    try:
        run = _setup(config, module, records)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    run.lock = lock
    return run


def _setup(config: TrainConfig, module, records: list[Record] | None) -> Run:
    data = ds.prepare(config, records)
    base, scale = ds.normalization(config, data.train)
    dtype = jnp.dtype(config.dtype)
    mesh = sharding.data_mesh() if config.shard else None
    # batch composition never depends on the device count: batches are padded with weight-0
    # rows up to a multiple of it (so sharded and single-device runs see the same data)
    bsz = min(config.batch_size, len(data.train))
    n_max = max(r.n_atoms for r in data.train)
    n_batches = -(-len(data.train) // bsz)
    total = config.epochs * n_batches
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    rc = config.regularizer
    put = lambda a: sharding.replicate(jax.tree_util.tree_map(jnp.asarray, a), mesh)  # noqa
    train_dev = put(pad_records(data.train, n_max))
    reg_dev = put(pad_records(data.reg)) if rc.lam > 0 else None
    val_dev = _val_chunks(data.val, mesh)

    hypers = config.hypers
    if module is None:  # data constants (e.g. MACE's avg_num_neighbors) from the training set
        hypers = resolve_hypers(config.model, config.hypers, data.train,
                                lambda name, **h: create_module(name, h, config.dtype))
        module = create_module(config.model, hypers, config.dtype)
    # the readers' geometry check, and the model's elements, on every row it will see
    # (records= bypasses the readers); under jit the model cannot check values itself
    known = getattr(module, "species", None)
    check_records(data.train + data.val + data.reg + data.test,
                  known_species=None if known is None else tuple(int(z) for z in known),
                  where=f"{config.db}: " if records is None else "records=: ")
    params = init_params(module, pad_records(data.train[:1], n_max), config.seed, dtype)
    model = Model.of(module, params, base, scale, dtype)
    # the schedule spans all epochs, not ``max_steps``: a run stopped early and resumed sees
    # the same learning rates as one that never stopped
    opt = OptSpec.of(config, config.epochs * n_batches)
    spec = StepSpec(model.replace(params=None), opt, rc, config.energy_weight, config.force_weight,
                    config.ema_decay, mesh, config.rotate)
    state = TrainState.initial(params, init_opt(opt, params), config.seed)
    meta = run_meta(config, base, scale, n_batches, hypers)
    ckpt = None
    if config.out_dir:
        prepare_out_dir(config)
        ckpt = Checkpoints(f"{config.out_dir}/checkpoints", config.keep_checkpoints)
        if config.resume and ckpt.steps():
            saved, saved_meta, _ = ckpt.restore(state.to_dict())
            check_resumable(saved_meta["config"], config)
            state = state.from_dict(saved)
    if mesh is not None:
        state = state.replace(**{k: put(getattr(state, k)) for k in ("params", "opt_state",
                                                                      "ema", "key")})
    has_f = any(r.forces is not None for r in data.val)
    return Run(config, data, model, spec, mesh, state, train_dev, reg_dev, val_dev, bsz,
               sharding.round_up(bsz, mesh), min(rc.batch_size, max(len(data.reg), 1)),
               n_batches, total, ckpt, meta, has_f)


def train(config: TrainConfig, *, module=None, records: list[Record] | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.db`` (see :class:`TrainConfig`).

    module: a flax module to train instead of ``jbo.models.create(config.model, **hypers)``.
    records: labelled rows to use instead of reading ``config.db``.
    on_step: called as ``on_step(step, metrics)`` for every step, in order, after the dispatch
      that ran it (may raise to interrupt).
    Raises :class:`TrainingDiverged` on a non-finite loss (the last good state is checkpointed).
    """
    t_start = time.perf_counter()
    run = setup(config, module, records)
    log = pbar = None
    try:
        step0 = int(run.state.step)
        log = MetricsLog(config.out_dir, resume_step=step0, tensorboard=config.tensorboard)
        pbar = _progress(config.progress, run.total_steps, step0)
        t0 = time.perf_counter()  # max_seconds counts training, not reading the data
        reason = _loop(run, log, pbar, on_step, t0)
    finally:
        if pbar is not None:
            pbar.close()
        if log is not None:
            log.close()
        run.close()
    state = run.state.to_host()
    # without validation data (or before the first validation) the best are the last ones
    best = state.best_params if run.data.val and int(state.evals) else _evaluated(run, state)
    return TrainResult(state.params, run.model.replace(params=best), config, log.epochs,
                       log.steps, run.data, reason, time.perf_counter() - t_start, state)


def _loop(run: Run, log: MetricsLog, pbar, on_step, t0: float) -> str:
    """Dispatch chunks of steps until a budget or the convergence rule stops the run."""
    cfg, state = run.config, run.state
    step = int(state.step)
    eval_every = cfg.eval_every or run.n_batches
    last_ckpt = time.perf_counter()
    reason = _budget_reason(run, step, t0)
    if reason is None and cfg.patience is not None and int(state.bad_evals) >= cfg.patience:
        reason = "converged before the resumed step"
    plans = Planner(run)
    while reason is None:
        n = min(cfg.log_every, run.total_steps - step, eval_every - step % eval_every)
        if cfg.checkpoint_every:
            n = min(n, cfg.checkpoint_every - step % cfg.checkpoint_every)
        ema = state.ema if cfg.ema_decay > 0 else None
        params, opt_state, ema, done, bufs = run_steps(
            run.spec, state.params, state.opt_state, ema, run.train_dev, run.reg_dev,
            state.key, plans.plan(step, n), jnp.int32(n), jnp.float64(state.lr_scale))
        done, bufs = int(done), jax.device_get(bufs)  # the one host sync of the dispatch
        state = state.replace(params=params, opt_state=opt_state, step=np.int64(step + done),
                              ema=ema if cfg.ema_decay > 0 else params,
                              sums=_accumulate(state.sums, bufs, done))
        rows = [{k: float(v[j]) for k, v in bufs.items()} for j in range(done)]
        for j, m in enumerate(rows):
            log.step(step + j + 1, (step + j) // run.n_batches, m)
        if rows:
            log.flush_steps(step + done, rows[-1])
        run.state = state
        if done < n:  # step `step + done + 1` had a non-finite loss
            _save(run, state)
            raise _diverged(run, step + done, float(bufs["loss"][done]))
        step += done
        if pbar is not None:
            pbar.update(done)
            pbar.set_postfix(loss=f"{rows[-1]['loss']:.3g}", epoch=(step - 1) // run.n_batches)
        if on_step is not None:
            for j, m in enumerate(rows):
                on_step(step - done + j + 1, m)
        evaluated = step % eval_every == 0
        if evaluated:
            state, reason = _evaluate_and_decide(run, state, log, t0)
            run.state = state
        if reason is None:
            reason = _budget_reason(run, step, t0)
            if reason is not None and not evaluated:  # a budget stop still reports validation
                state, _ = _evaluate_and_decide(run, state, log, t0)
                run.state = state
        periodic = (step % cfg.checkpoint_every == 0) if cfg.checkpoint_every else \
            (evaluated and time.perf_counter() - last_ckpt >= cfg.checkpoint_seconds)
        if periodic or reason is not None:
            _save(run, state)
            last_ckpt = time.perf_counter()
    return reason


def _evaluate_and_decide(run: Run, state: TrainState, log: MetricsLog, t0: float):
    cfg = run.config
    params = state.ema if cfg.ema_decay > 0 else state.params
    val = evaluate_device(run.model.replace(params=params), run.val_dev, run.has_forces)
    step = int(state.step)
    reason = None
    if val:  # without validation data nothing is scored: the last parameters are kept
        state, reason = after_evaluation(state, val["mae"], params, cfg)
    s = state.sums
    w = max(float(s["weight"]), 1e-12)
    nf = max(float(s["n_f"]), 1e-12)
    lr = float(run.spec.opt.schedule_fn()(step - 1)) * float(state.lr_scale)
    log.epoch(dict(epoch=(step - 1) // run.n_batches, step=step, lr=lr,
                   train_loss=float(s["loss"]) / w, reg=float(s["reg"]) / w,
                   train_mae=1e3 * float(s["abs_e"]) / w,
                   train_rmse=1e3 * np.sqrt(float(s["sq_e"]) / w),
                   train_force_mae=1e3 * float(s["abs_f"]) / nf if s["n_f"] else np.nan,
                   val_mae=val.get("mae", np.nan), val_rmse=val.get("rmse", np.nan),
                   val_force_mae=val.get("force_mae", np.nan),
                   val_force_rmse=val.get("force_rmse", np.nan),
                   seconds=time.perf_counter() - t0))
    return state.replace(sums={k: np.float64(0.0) for k in SUM_KEYS}), reason


def _budget_reason(run: Run, step: int, t0: float) -> str | None:
    cfg = run.config
    if cfg.max_steps is not None and step >= cfg.max_steps:
        return f"budget: max_steps={cfg.max_steps} reached"
    if step >= run.total_steps:
        if cfg.schedule == "constant":
            return f"budget: {cfg.epochs} epochs done"
        st = run.state  # a decaying schedule ends with the learning rate at its floor
        if not run.data.val:
            return (f"schedule finished ({cfg.schedule} over {cfg.epochs} epochs); no "
                    "validation data (val_fraction=0 or one training parent): the final "
                    "parameters are kept")
        return (f"schedule finished ({cfg.schedule} over {cfg.epochs} epochs): best validation "
                f"MAE {float(st.best_val):.4g} meV/atom, {int(st.bad_evals)} of "
                f"{int(st.evals)} evaluations since one improved it by more than "
                f"{100 * cfg.min_improvement:g}%")
    if cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds:
        return f"budget: max_seconds={cfg.max_seconds:g} reached at step {step}"
    return None


def _accumulate(sums: dict, bufs: dict, done: int) -> dict:
    """Add ``done`` steps' metrics to the running sums (sequentially: exact on resume)."""
    s = {k: float(v) for k, v in sums.items()}
    for j in range(done):
        w = float(bufs["weight"][j])
        s["loss"] += float(bufs["loss"][j]) * w
        s["reg"] += float(bufs["reg"][j]) * w
        for k in ("weight", "abs_e", "sq_e", "abs_f", "sq_f", "n_f"):
            s[k] += float(bufs[k][j])
        s["n"] += 1
    return {k: np.float64(v) for k, v in s.items()}


def _diverged(run: Run, step: int, loss: float) -> TrainingDiverged:
    epoch, pos = divmod(step, run.n_batches)
    idx = Planner(run).indices(step)
    names = ", ".join(f"{run.data.train[i].cluster}[subset={run.data.train[i].subset}]"
                      for i in idx)
    return TrainingDiverged(
        f"non-finite loss {loss} at step {step + 1} (epoch {epoch}, batch {pos} of "
        f"{run.n_batches}: {names}); parameters not updated, last good state checkpointed"
        + (f" in {run.ckpt.directory}" if run.ckpt else "") + ". Lower lr or check the data.")


def _save(run: Run, state: TrainState) -> None:
    if run.ckpt is not None and int(state.step) > 0:
        if int(state.evals) == 0:  # nothing validated yet: the best are the latest
            state = state.replace(best_params=_evaluated(run, state))
        run.ckpt.save(int(state.step), state.to_dict(), run.meta)


def _evaluated(run: Run, state: TrainState):
    return state.ema if run.config.ema_decay > 0 else state.params


def _val_chunks(records: list[Record], mesh, size: int = 64) -> list[Batch]:
    if not records:
        return []
    n_max = max(r.n_atoms for r in records)
    size = sharding.round_up(min(size, len(records)), mesh)
    return [sharding.shard_batch(pad_records(records[i:i + size], n_max, size), mesh)
            for i in range(0, len(records), size)]


def evaluate_device(model: Model, chunks: list[Batch], forces: bool = False
                    ) -> dict[str, float]:
    """Energy MAE/RMSE (meV/atom) and, with ``forces``, force MAE/RMSE (meV/Å) of ``model`` on
    padded device-resident chunks; one host transfer. ``{}`` without chunks."""
    if not chunks:
        return {}
    tot = None
    for c in chunks:
        s = eval_sums(model, c, forces)
        tot = s if tot is None else jax.tree_util.tree_map(jnp.add, tot, s)
    tot = {k: float(v) for k, v in jax.device_get(tot).items()}
    out = {"mae": 1e3 * tot["abs_e"] / tot["n"], "rmse": 1e3 * np.sqrt(tot["sq_e"] / tot["n"])}
    if forces and tot["n_f"] > 0:
        out.update(force_mae=1e3 * tot["abs_f"] / tot["n_f"],
                   force_rmse=1e3 * np.sqrt(tot["sq_f"] / tot["n_f"]))
    return out


def evaluate(model: Model, records: list[Record], batch_size: int = 64, mesh=None,
             forces: bool = False) -> dict[str, float]:
    """Energy MAE/RMSE (meV/atom) of ``model`` on ``records`` (and force MAE/RMSE in meV/Å
    with ``forces``); ``{}`` when there are none."""
    model = sharding.replicate(jax.tree_util.tree_map(jnp.asarray, model), mesh)
    forces = forces and any(r.forces is not None for r in records)
    return evaluate_device(model, _val_chunks(records, mesh, batch_size), forces)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False)
