"""Training: ``Trainer`` (fit / evaluate / predict / restore), callbacks, checkpoints, metrics."""

from .callbacks import Checkpoint, EarlyStopping, History, plot_curves
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .metrics import accuracy, confusion_matrix, per_class_accuracy, top_k_accuracy
from .report import write_report
from .trainer import NonFiniteError, Trainer, locate_nonfinite


def fit(model, train, val=None, epochs=1, optimizer=None, loss=None, **kwargs):
    """Functional shortcut: ``Trainer(model, loss, optimizer, **kwargs).fit(train, val, epochs)``.

    ``loss`` defaults to ``CrossEntropyLoss()``; ``optimizer`` must be given.
    """
    if optimizer is None:
        raise ValueError("fit: an optimizer is required, e.g. cnnkit.optim.SGD(model.parameters(), lr=0.01)")
    if loss is None:
        from ..nn import CrossEntropyLoss
        loss = CrossEntropyLoss()
    trainer = Trainer(model, loss, optimizer, **kwargs)
    trainer.fit(train, val, epochs)
    return trainer


__all__ = ["Trainer", "fit", "NonFiniteError", "locate_nonfinite", "Checkpoint", "EarlyStopping", "History",
           "plot_curves", "CheckpointError", "save_checkpoint", "load_checkpoint", "accuracy", "confusion_matrix",
           "per_class_accuracy", "top_k_accuracy", "write_report"]
