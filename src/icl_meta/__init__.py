"""icl_meta: the core of the executable companion to Minegishi et al., ICML 2025 (in-context meta-learning)."""

from .bayes import ceilings, scc_theory_accuracy
from .config import Config, fast_mode
from .model import Model, loss_and_correct, mask_matrix
from .probes import attention_maps, circuit_metrics, paper_boundaries, phase_report, phases, robust_boundaries
from .runs import Run, compact, load_run, shipped, shipped_sweep
from .task import Batch, Instance, make_instance, sample
from .trainer import evaluate, retrain_start, train

__version__ = "0.1.0"

__all__ = [
    "Batch", "Config", "Instance", "Model", "Run", "attention_maps", "ceilings", "circuit_metrics", "evaluate",
    "fast_mode", "load_run", "loss_and_correct", "make_instance", "mask_matrix", "paper_boundaries",
    "phase_report", "phases", "retrain_start", "robust_boundaries", "sample", "scc_theory_accuracy", "shipped",
    "shipped_sweep", "compact", "train",
]
