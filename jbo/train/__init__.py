"""Training of jbo models on ase.db datasets, with the body-order regularizer.

    from jbo.train import TrainConfig, RegularizerConfig, train
    result = train(TrainConfig(db="data/h_clusters.npz", model="soap_bpnn", makeup="up_to:3",
                               regularizer=RegularizerConfig(lam=1.0, order=3),
                               out_dir="runs/reg"))

See :mod:`jbo.train.loop` (loop, exact resume), :mod:`jbo.train.regularizers` (penalties and
the unbiased stochastic estimator), :mod:`jbo.train.sharding` (data parallelism, TPUs).
"""

from jbo.train.checkpoints import CheckpointError, Checkpoints
from jbo.train.config import RegularizerConfig, TrainConfig
from jbo.train.loop import TrainingDiverged, TrainResult, evaluate, train
from jbo.train.state import TrainState
from jbo.train.model import load_trained
from jbo.train.regularizers import body_order_penalty

__all__ = ["TrainConfig", "RegularizerConfig", "train", "TrainResult", "TrainingDiverged",
           "evaluate", "TrainState", "load_trained", "Checkpoints", "CheckpointError",
           "body_order_penalty"]
