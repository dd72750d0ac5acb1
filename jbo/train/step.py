"""The pure training step, and many steps per dispatch over device-resident data.

:func:`train_step` is one optimizer step on a given batch. :func:`run_steps` runs up to ``K``
of them in one compiled ``lax.while_loop``: the batches are gathered on the device from the
training arrays (uploaded once per run) by index arrays ``[K, B]`` computed on the host, the
per-step metrics land in ``[K]`` buffers read once per dispatch, and the loop stops early at
the first non-finite loss with the parameters of the step before it. One compilation serves
every chunk length ``n <= K``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jbo.data.batch import Batch
from jbo.models.model import Model
from jbo.rotations import random_rotations, rotate
from jbo.train.config import RegularizerConfig, TrainConfig
from jbo.train.losses import batch_energy_forces, energy_force_loss
from jbo.train.regularizers import body_order_penalty

__all__ = ["OptSpec", "StepSpec", "objective", "augment", "train_step", "run_steps",
           "init_opt", "eval_sums", "STEP_METRICS"]

# per-step metrics returned by run_steps (energy/force sums are additive over batches)
STEP_METRICS = ("loss", "energy_loss", "reg", "grad_norm", "weight", "abs_e", "sq_e", "abs_f",
                "sq_f", "n_f")


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


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about a training step (hashable: one compilation per distinct spec).

    ema: parameter EMA decay (0 = off). mesh: the data mesh of a sharded run (or None).
    rotate: rotational augmentation of every step's structures (:func:`augment`).
    """

    model: Model  # with params=None: the architecture, baseline and scale (static)
    opt: OptSpec
    reg: RegularizerConfig
    energy_weight: float = 1.0
    force_weight: float = 0.0
    ema: float = 0.0
    mesh: object = None
    rotate: bool = False


def objective(spec: StepSpec, params, batch, reg_batch, key, step=0):
    """Pure loss: (loss + λ·every·penalty, (loss, penalty, additive metric sums)).

    With ``reg.every = n > 1`` the penalty is evaluated (``lax.cond``) only when
    ``step % n == 0`` and weighted by n; on the other steps it is reported as 0.
    """
    rc, model = spec.reg, spec.model.replace(params=params)
    loss, sums = energy_force_loss(model, batch, spec.energy_weight, spec.force_weight)
    reg = jnp.zeros((), jnp.float64)
    if rc.lam > 0:
        def penalty(p):
            pen = body_order_penalty(
                model.replace(params=p).potential, reg_batch.positions,
                reg_batch.species, reg_batch.mask, key, order=rc.order, mode=rc.mode,
                weights=rc.weights, scale=model.scale, exact_max_atoms=rc.exact_max_atoms,
                samples=rc.samples, max_order=rc.max_order, backend=rc.backend)
            w = reg_batch.weight
            return jnp.sum(w * pen) / jnp.maximum(jnp.sum(w), 1e-12)
        if rc.every == 1:
            reg = penalty(params)
        else:
            reg = jax.lax.cond(step % rc.every == 0, penalty,
                               lambda p: jnp.zeros((), jnp.float64), params)
    return loss + rc.lam * rc.every * reg, (loss, reg, sums)


# the rotations' stream of a step key (the regularizer draws from the step key itself, so
# rotate=False steps are bit-identical to those of a run without augmentation)
_ROTATION_STREAM = 0x726F74


def augment(batch: Batch, reg_batch: Batch | None, key) -> tuple[Batch, Batch | None]:
    """Every structure of ``batch`` turned by its own Haar-random rotation R drawn from
    ``key`` (positions x' = R x and force labels F' = R F), and the regularizer's clusters by
    independent ones: energies and the body-order penalty of an invariant model are unchanged
    (to round-off); a model that is not invariant learns to be. Traceable, on device."""
    keys = jax.random.split(jax.random.fold_in(key, _ROTATION_STREAM))

    def turn(b: Batch, k) -> Batch:
        # row i's rotation depends on (key, i) only: padding rows added for the device count
        # do not change the others' (sharded runs see the rotations of single-device ones)
        rows = jax.vmap(jax.random.fold_in, (None, 0))(k, jnp.arange(b.positions.shape[0]))
        r = jax.vmap(lambda kr: random_rotations(kr, (), b.positions.dtype))(rows)
        pos, frc = rotate(r, b.positions, b.forces)
        return b.replace(positions=pos, forces=frc)

    return turn(batch, keys[0]), None if reg_batch is None else turn(reg_batch, keys[1])


def _step(spec: StepSpec, params, opt_state, batch, reg_batch, key, step, lr_scale=1.0):
    if spec.rotate:
        batch, reg_batch = augment(batch, reg_batch, key)
    grads, (loss, reg, sums) = jax.grad(objective, argnums=1, has_aux=True)(
        spec, params, batch, reg_batch, key, step)
    updates, opt_state = spec.opt.build().update(grads, opt_state, params)
    updates = jax.tree_util.tree_map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
    params = optax.apply_updates(params, updates)
    total = loss + spec.reg.lam * spec.reg.every * reg
    return params, opt_state, dict(loss=total, energy_loss=loss, reg=reg,
                                   grad_norm=optax.tree.norm(grads), **sums)


@functools.partial(jax.jit, static_argnums=0)
def train_step(spec: StepSpec, params, opt_state, batch, reg_batch, key, step=0):
    """One optimizer step -> (params, opt_state, metrics). Pure; jitted per distinct spec.

    ``step`` (the 0-based index of this step) only matters for ``reg.every > 1``.
    """
    return _step(spec, params, opt_state, batch, reg_batch, key, step)


@functools.partial(jax.jit, static_argnums=0)
def init_opt(opt: OptSpec, params):
    return opt.build().init(params)


def _gather(arrays: Batch, idx, weight, mesh) -> Batch:
    """Rows ``idx[B]`` of a device-resident batch; ``weight[B]`` replaces their weights."""
    out = jax.tree_util.tree_map(lambda v: jnp.take(v, idx, axis=0), arrays)
    out = out.replace(weight=weight)
    if mesh is not None:  # split the gathered batch over the devices (GSPMD does the rest)
        out = jax.tree_util.tree_map(lambda v: jax.lax.with_sharding_constraint(
            v, NamedSharding(mesh, PartitionSpec("data", *([None] * (v.ndim - 1))))), out)
    return out


def _full_metrics(m: dict) -> dict:
    z = jnp.zeros((), jnp.float64)
    return {k: jnp.asarray(m.get(k, z), jnp.float64) for k in STEP_METRICS}


@functools.partial(jax.jit, static_argnums=0)
def run_steps(spec: StepSpec, params, opt_state, ema, data, reg_data, key, plan, n, lr_scale):
    """Up to ``n <= K`` optimizer steps in one dispatch.

    data / reg_data: device-resident :class:`Batch` of the training rows / regularizer clusters
      (``reg_data`` None without regularizer).
    plan: ``idx [K,B]``, ``weight [K,B]`` (0 for padding rows), ``reg_idx [K,R]``,
      ``reg_weight [K,R]``, ``step [K]``
      (the 0-based global index of each step). key: the run's PRNG key (step keys are
      ``fold_in(key, step)``). ema: EMA parameters (ignored when ``spec.ema == 0``).
    Returns ``(params, opt_state, ema, done, metrics)``: ``done`` steps were applied (fewer
    than ``n`` when step ``done`` had a non-finite loss; its update is dropped) and
    ``metrics[name][:done + 1]`` are theirs, plus the failed step's.
    """
    k_max = plan["idx"].shape[0]
    bufs = {k: jnp.zeros((k_max,), jnp.float64) for k in STEP_METRICS}

    def cond(c):
        i, ok = c[0], c[1]
        return (i < n) & ok

    def body(c):
        i, _, params, opt_state, ema, bufs = c
        batch = _gather(data, plan["idx"][i], plan["weight"][i], spec.mesh)
        reg_batch = _gather(reg_data, plan["reg_idx"][i], plan["reg_weight"][i],
                            spec.mesh) if reg_data is not None else None
        step = plan["step"][i]
        new_p, new_o, m = _step(spec, params, opt_state, batch, reg_batch,
                                jax.random.fold_in(key, step), step, lr_scale)
        m = _full_metrics(m)
        ok = jnp.isfinite(m["loss"])
        keep = functools.partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
        params, opt_state = keep(new_p, params), keep(new_o, opt_state)
        if spec.ema > 0:
            d = spec.ema
            ema = keep(jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, ema, params), ema)
        bufs = {k: b.at[i].set(m[k]) for k, b in bufs.items()}
        return i + ok.astype(i.dtype), ok, params, opt_state, ema, bufs

    c = (jnp.zeros((), jnp.int32), jnp.array(True), params, opt_state, ema, bufs)
    i, _, params, opt_state, ema, bufs = jax.lax.while_loop(cond, body, c)
    return params, opt_state, ema, i, bufs


@functools.partial(jax.jit, static_argnums=2)
def eval_sums(model: Model, batch: Batch, forces: bool = False):
    """Additive error sums of ``model`` on a padded batch: ``n`` structures, ``abs_e``/``sq_e``
    (eV/atom per structure), ``n_f`` force components, ``abs_f``/``sq_f`` (eV/Å). The model is
    traced (its params): new params of the same model reuse the program."""
    w = batch.weight
    e, f = batch_energy_forces(model, batch.positions, batch.species, batch.mask, forces)
    de = (e - batch.energy) / jnp.maximum(jnp.sum(batch.mask, -1), 1)
    out = {"n": jnp.sum(w), "abs_e": jnp.sum(w * jnp.abs(de)), "sq_e": jnp.sum(w * de**2)}
    if forces:
        wf = (w * batch.has_forces)[:, None, None] * batch.mask[..., None]
        df = f - batch.forces
        out.update(n_f=jnp.sum(wf) * 3, abs_f=jnp.sum(wf * jnp.abs(df)),
                   sq_f=jnp.sum(wf * df**2))
    return out
