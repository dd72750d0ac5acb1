"""Metrics: ``steps.csv`` (per optimizer step), ``metrics.csv`` (per epoch), TensorBoard.

Floats are written with ``repr`` (round-trip exact). On resume from step t the rows after t are
dropped (they are about to be replayed) and TensorBoard events from t+1 on are purged.
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["MetricsLog", "STEP_FIELDS", "EPOCH_FIELDS", "read_csv"]

STEP_FIELDS = ("step", "epoch", "loss", "energy_loss", "reg", "grad_norm")
EPOCH_FIELDS = ("epoch", "step", "lr", "train_loss", "reg", "train_mae", "train_rmse",
                "train_force_mae", "val_mae", "val_rmse", "val_force_mae", "val_force_rmse",
                "seconds")
# one row per evaluation: energies in meV/atom, forces in meV/Å, losses dimensionless, seconds
# since the run (re)started


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as dicts of floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class MetricsLog:
    """Collects metrics in memory and, with ``out_dir``, in CSV files and TensorBoard."""

    def __init__(self, out_dir: str | None, resume_step: int = 0, tensorboard: bool = True):
        self.steps: list[dict[str, float]] = []
        self.epochs: list[dict[str, float]] = []
        self._files, self._writers, self._tb = {}, {}, None
        if out_dir is None:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fields, rows in (("steps", STEP_FIELDS, self.steps),
                                   ("metrics", EPOCH_FIELDS, self.epochs)):
            path = out / f"{name}.csv"
            if resume_step > 0 and path.exists():
                rows.extend(r for r in read_csv(path) if r["step"] <= resume_step)
            f = open(path, "w", newline="")
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(_fmt(r))
            f.flush()
            self._files[name], self._writers[name] = f, w
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)

    def step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "epoch": epoch, **{k: metrics[k] for k in STEP_FIELDS[2:]}}
        self.steps.append(row)
        if "steps" in self._writers:
            self._writers["steps"].writerow(_fmt(row))

    def flush_steps(self, step: int, metrics: dict[str, float]) -> None:
        """TensorBoard scalars of the last step of a dispatch (once per dispatch)."""
        if self._tb is not None:
            self._tb.add_scalar("step/loss", metrics["loss"], step)
            self._tb.add_scalar("step/reg", metrics["reg"], step)

    def epoch(self, row: dict[str, float]) -> None:
        self.epochs.append(row)
        if "metrics" in self._writers:
            self._writers["metrics"].writerow(_fmt(row))
            self._files["metrics"].flush()
            self._files["steps"].flush()
        if self._tb is not None:
            for k in EPOCH_FIELDS[2:]:
                self._tb.add_scalar(f"epoch/{k}", row[k], int(row["step"]))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files, self._writers = {}, {}
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(row: dict[str, float]) -> dict[str, str]:
    return {k: repr(float(v)) if isinstance(v, float) else str(v) for k, v in row.items()}
