"""The training loop: pure step at the core, data/checkpoints/logging around it.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e), the regularizer's
clusters and PRNG key at step t are functions of (seed, t), and the checkpoint holds params,
optimizer state, step, RNG key, early-stopping state and the partial epoch sums. Resuming from
step t therefore replays steps t+1.. bit for bit (float64, same device count).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jbo.data.batches import Record, batch_indices
from jbo.train import dataset as ds
from jbo.train import sharding
from jbo.train.checkpoints import Checkpoints
from jbo.train.config import RegularizerConfig, TrainConfig
from jbo.train.metrics import MetricsLog
from jbo.train.losses import EnergyModel, batch_energy_forces, contract_energy_fn, energy_force_loss
from jbo.train.model import create_module, energy_model, init_params
from jbo.train.regularizers import body_order_penalty

__all__ = ["train", "TrainResult", "TrainingDiverged", "OptSpec", "StepSpec", "make_optimizer",
           "make_step", "train_step", "objective", "evaluate"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the message names the batch, the last checkpoint is kept."""


@dataclasses.dataclass
class TrainResult:
    params: Any  # parameters after the last step
    best_params: Any  # lowest validation MAE (the final ones without validation data)
    model: EnergyModel
    module: Any
    config: TrainConfig
    history: list[dict[str, float]]  # one row per epoch (see MetricsLog.EPOCH_FIELDS)
    steps: list[dict[str, float]]  # one row per optimizer step
    data: ds.Datasets
    stop_reason: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class OptSpec:
    """Hashable optimizer settings (Adam + clipping + schedule over ``total_steps``)."""

    lr: float
    schedule: str
    warmup_steps: int
    decay_rate: float
    grad_clip: float | None
    total_steps: int

    @classmethod
    def of(cls, config: TrainConfig, total_steps: int) -> "OptSpec":
        return cls(config.lr, config.schedule, config.warmup_steps, config.decay_rate,
                   config.grad_clip, max(int(total_steps), 1))

    def schedule_fn(self) -> optax.Schedule:
        """The learning rate as a function of the optimizer step."""
        if self.schedule == "constant":
            return optax.constant_schedule(self.lr)
        if self.schedule == "cosine":
            return optax.warmup_cosine_decay_schedule(
                0.0 if self.warmup_steps else self.lr, self.lr, self.warmup_steps,
                max(self.total_steps, self.warmup_steps + 1), end_value=0.01 * self.lr)
        return optax.exponential_decay(self.lr, self.total_steps, self.decay_rate)

    def build(self) -> optax.GradientTransformation:
        chain = [optax.clip_by_global_norm(self.grad_clip)] if self.grad_clip else []
        return optax.chain(*chain, optax.scale_by_adam(),
                           optax.scale_by_learning_rate(self.schedule_fn()))


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam with optional global-norm clipping and the configured learning-rate schedule."""
    return OptSpec.of(config, total_steps).build()


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about a training step (hashable: one compilation per distinct spec)."""

    model: EnergyModel
    opt: OptSpec
    reg: RegularizerConfig
    energy_weight: float = 1.0
    force_weight: float = 0.0


def objective(spec: StepSpec, params, batch, reg_batch, key, step=0):
    """Pure loss: (loss + λ·every·penalty, (loss, penalty, additive metric sums)).

    With ``reg.every = n > 1`` the penalty is evaluated (``lax.cond``) only when
    ``step % n == 0`` and weighted by n; on the other steps it is reported as 0.
    """
    rc, model = spec.reg, spec.model
    loss, sums = energy_force_loss(params, batch, model, spec.energy_weight, spec.force_weight)
    reg = jnp.zeros((), jnp.float64)
    if rc.lam > 0:
        def penalty(p):
            pen = body_order_penalty(
                contract_energy_fn(model, p, jnp.float64), reg_batch["positions"],
                reg_batch["species"], reg_batch["mask"], key, order=rc.order, mode=rc.mode,
                weights=rc.weights, scale=model.scale, exact_max_atoms=rc.exact_max_atoms,
                samples=rc.samples, max_order=rc.max_order, backend=rc.backend)
            w = reg_batch["weight"]
            return jnp.sum(w * pen) / jnp.maximum(jnp.sum(w), 1e-12)
        if rc.every == 1:
            reg = penalty(params)
        else:
            reg = jax.lax.cond(step % rc.every == 0, penalty,
                               lambda p: jnp.zeros((), jnp.float64), params)
    return loss + rc.lam * rc.every * reg, (loss, reg, sums)


@functools.partial(jax.jit, static_argnums=0)
def train_step(spec: StepSpec, params, opt_state, batch, reg_batch, key, step=0):
    """One optimizer step -> (params, opt_state, metrics). Pure; jitted per distinct spec.

    ``step`` (the 0-based index of this step) only matters for ``reg.every > 1``.
    """
    grads, (loss, reg, sums) = jax.grad(objective, argnums=1, has_aux=True)(
        spec, params, batch, reg_batch, key, step)
    updates, opt_state = spec.opt.build().update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    total = loss + spec.reg.lam * spec.reg.every * reg
    return params, opt_state, dict(loss=total, energy_loss=loss, reg=reg,
                                   grad_norm=optax.tree.norm(grads), **sums)


@functools.partial(jax.jit, static_argnums=0)
def _init_opt(opt: OptSpec, params):
    return opt.build().init(params)


@functools.partial(jax.jit, static_argnums=0)
def _energies(model: EnergyModel, params, batch):
    return batch_energy_forces(model, params, batch["positions"], batch["species"],
                               batch["mask"])[0]


def make_step(model: EnergyModel, config: TrainConfig, total_steps: int) -> Callable:
    """``step(params, opt_state, batch, reg_batch, key) -> (params, opt_state, metrics)``."""
    spec = StepSpec(model, OptSpec.of(config, total_steps), config.regularizer,
                    config.energy_weight, config.force_weight)
    return functools.partial(train_step, spec)


def evaluate(model: EnergyModel, params, records: list[Record], batch_size: int = 64,
             mesh=None) -> dict[str, float]:
    """Energy MAE/RMSE (meV/atom) of ``records``; ``{}`` when there are none."""
    if not records:
        return {}
    n_max = max(r.n_atoms for r in records)
    errs = []
    size = sharding.round_up(min(batch_size, len(records)), mesh)
    for i in range(0, len(records), size):
        chunk = records[i:i + size]
        b = ds.padded(chunk, size, n_max)
        e = np.asarray(_energies(model, params, sharding.shard_batch(b, mesh)))[:len(chunk)]
        errs.append((e - b["energy"][:len(chunk)]) / b["mask"][:len(chunk)].sum(-1))
    err = np.concatenate(errs) * 1e3
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}


def _meta(config: TrainConfig, base: dict[int, float], scale: float, n_batches: int) -> dict:
    return {"format": 1, "config": config.to_dict(), "model": config.model,
            "hypers": config.hypers, "dtype": config.dtype, "scale": scale,
            "baseline": {str(z): c for z, c in base.items()}, "n_batches": n_batches}


_RESUME_IGNORED = {"epochs", "max_steps", "progress", "resume", "out_dir", "tensorboard",
                   "checkpoint_every", "keep_checkpoints", "patience"}


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    now = config.to_dict()
    diff = sorted(k for k in now if k not in _RESUME_IGNORED
                  and _json_norm(saved.get(k)) != _json_norm(now[k]))
    if diff:
        raise ValueError(f"cannot resume from {config.out_dir}: the checkpoint was trained with "
                         f"different {diff}; use another out_dir or resume=False")


def _json_norm(x):
    import json
    return json.loads(json.dumps(x))


def train(config: TrainConfig, *, module=None, records: list[Record] | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.db`` (see :class:`TrainConfig`).

    module: a flax module to train instead of ``jbo.models.create(config.model, **hypers)``.
    records: labelled rows to use instead of reading ``config.db``.
    on_step: called as ``on_step(step, metrics)`` after every step (may raise to interrupt).
    Raises :class:`TrainingDiverged` on a non-finite loss (the last checkpoint is kept).
    """
    t0 = time.perf_counter()
    data = ds.prepare(config, records)
    base, scale = ds.normalization(config, data.train)
    dtype = jnp.dtype(config.dtype)
    mesh = sharding.data_mesh() if config.shard else None
    # batch composition never depends on the device count: arrays are padded with weight-0
    # rows up to a multiple of it (so sharded and single-device runs see the same data)
    bsz = min(config.batch_size, len(data.train))
    bsz_dev = sharding.round_up(bsz, mesh)
    n_max = max(r.n_atoms for r in data.train)
    n_batches = -(-len(data.train) // bsz)
    total_steps = config.epochs * n_batches
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    rc = config.regularizer
    reg_size = min(rc.batch_size, max(len(data.reg), 1))
    reg_dev = sharding.round_up(reg_size, mesh)
    train_arr = ds.padded(data.train, len(data.train), n_max)
    reg_arr = ds.padded(data.reg, len(data.reg)) if rc.lam > 0 else {}

    module = module if module is not None else create_module(config.model, config.hypers,
                                                             config.dtype)
    params = init_params(module, ds.padded(data.train[:1], 1, n_max), config.seed, dtype)
    model = energy_model(module, params, base, scale, dtype)
    # the schedule spans all epochs, not ``max_steps``: a run stopped early and resumed sees
    # the same learning rates as one that never stopped
    opt = OptSpec.of(config, config.epochs * n_batches)
    spec = StepSpec(model, opt, rc, config.energy_weight, config.force_weight)
    state = {"params": params, "opt_state": _init_opt(opt, params), "step": np.int64(0),
             "key": jax.random.PRNGKey(config.seed), "best_params": params,
             "best_val": np.float64(np.inf), "bad_epochs": np.int64(0),
             "epoch_sums": {k: np.float64(0.0) for k in ("loss", "reg", "weight", "abs_e",
                                                         "sq_e", "n")}}
    meta = _meta(config, base, scale, n_batches)
    ckpt = Checkpoints(f"{config.out_dir}/checkpoints", config.keep_checkpoints) \
        if config.out_dir else None
    if ckpt and config.resume and ckpt.steps():
        state, saved_meta, _ = ckpt.restore(state)
        _check_resumable(saved_meta["config"], config)
    step0 = int(state["step"])
    log = MetricsLog(config.out_dir, resume_step=step0, tensorboard=config.tensorboard)

    params = sharding.replicate(jax.tree_util.tree_map(jnp.asarray, state["params"]), mesh)
    opt_state = sharding.replicate(jax.tree_util.tree_map(jnp.asarray, state["opt_state"]), mesh)
    lr_at = opt.schedule_fn()
    sums = {k: float(v) for k, v in state["epoch_sums"].items()}
    best_val, bad = float(state["best_val"]), int(state["bad_epochs"])
    best_params = state["best_params"]
    stop_reason = "max_steps" if step0 >= total_steps else "epochs"
    if config.patience is not None and bad >= config.patience and step0 % n_batches == 0:
        total_steps, stop_reason = step0, f"early stopping after epoch {step0 // n_batches - 1}"
    pbar = _progress(config.progress, total_steps, step0)
    step = step0
    try:
        while step < total_steps:
            epoch, pos = divmod(step, n_batches)
            idx = batch_indices(len(data.train), bsz, config.seed, epoch)[pos]
            batch = _take(train_arr, idx, bsz_dev)
            reg_batch = _take(reg_arr, _reg_indices(len(data.reg), reg_size, config.seed, step),
                              reg_dev) if rc.lam > 0 else {}
            key = jax.random.fold_in(jnp.asarray(state["key"]), step)
            new_params, new_opt, m = train_step(spec, params, opt_state,
                                                sharding.shard_batch(batch, mesh),
                                                sharding.shard_batch(reg_batch, mesh), key,
                                                jnp.asarray(step))
            m = {k: float(v) for k, v in m.items()}
            if not np.isfinite(m["loss"]):
                names = ", ".join(f"{data.train[i].cluster}[subset={data.train[i].subset}]"
                                  for i in idx)
                raise TrainingDiverged(
                    f"non-finite loss {m['loss']} at step {step + 1} (epoch {epoch}, batch {pos} "
                    f"of {n_batches}: {names}); parameters not updated, last checkpoint kept"
                    + (f" in {ckpt.directory}" if ckpt else "") + ". Lower lr or check the data.")
            params, opt_state, step = new_params, new_opt, step + 1
            for k in ("loss", "reg"):
                sums[k] += m[k] * m["weight"]
            for k in ("weight", "abs_e", "sq_e"):
                sums[k] += m[k]
            sums["n"] += 1
            log.step(step, epoch, m)
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{m['loss']:.3g}", epoch=epoch)
            if on_step is not None:
                on_step(step, m)
            end_of_epoch = step % n_batches == 0
            stop = False
            if end_of_epoch:
                val = evaluate(model, params, data.val, mesh=mesh)
                score = val.get("mae", -float(step))
                if score < best_val:
                    best_val, bad, best_params = score, 0, params
                else:
                    bad += 1
                w = max(sums["weight"], 1e-12)
                log.epoch(dict(epoch=epoch, step=step, lr=float(lr_at(step - 1)),
                               train_loss=sums["loss"] / w, reg=sums["reg"] / w,
                               train_mae=1e3 * sums["abs_e"] / w,
                               train_rmse=1e3 * np.sqrt(sums["sq_e"] / w),
                               val_mae=val.get("mae", np.nan), val_rmse=val.get("rmse", np.nan),
                               seconds=time.perf_counter() - t0))
                sums = dict.fromkeys(sums, 0.0)
                if config.patience is not None and bad >= config.patience:
                    stop, stop_reason = True, f"early stopping after epoch {epoch}"
            due = (config.checkpoint_every and step % config.checkpoint_every == 0) or \
                (end_of_epoch and not config.checkpoint_every) or stop or step == total_steps
            if ckpt and due:
                ckpt.save(step, {"params": params, "opt_state": opt_state,
                                 "step": np.int64(step), "key": state["key"],
                                 "best_params": best_params, "best_val": np.float64(best_val),
                                 "bad_epochs": np.int64(bad),
                                 "epoch_sums": {k: np.float64(v) for k, v in sums.items()}}, meta)
            if stop:
                break
        else:
            if config.max_steps is not None and step >= config.max_steps:
                stop_reason = "max_steps"
    finally:
        if pbar is not None:
            pbar.close()
        log.close()
    if not data.val:
        best_params = params
    # host arrays: a trained model must not carry the training mesh into later programs (a
    # closure over mesh-sharded parameters fails inside another shard_map, e.g. the engine's)
    params, best_params = jax.device_get((params, best_params))
    return TrainResult(params, best_params, model, module, config, log.epochs, log.steps, data,
                       stop_reason, time.perf_counter() - t0)


def _reg_indices(n: int, size: int, seed: int, step: int) -> np.ndarray:
    """Which training full clusters the regularizer sees at ``step`` (a function of both)."""
    return np.random.default_rng([seed, 1, step]).choice(n, size=min(size, n), replace=False)


def _take(arrays: dict[str, np.ndarray], idx: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Rows ``idx`` of padded arrays, filled up to ``size`` rows with weight-0 copies."""
    full = np.concatenate([idx, np.full(size - len(idx), idx[0], idx.dtype)])
    out = {k: v[full] for k, v in arrays.items()}
    out["weight"] = np.where(np.arange(size) < len(idx), out["weight"], 0.0)
    return out


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False)
