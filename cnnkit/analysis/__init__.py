"""The lecture's arithmetic as tools: shape inference, the parameter and multiply-add
ledger (``summary``), receptive fields, and the reconciliation of totals with published
figures.

    import numpy as np
    from cnnkit import models
    from cnnkit.analysis import summary, receptive_fields
    net = models.get("vgg16", num_classes=1000, in_channels=3)
    s = summary(net, (3, 224, 224))           # no convolution is run
    print(s)                                  # table; s.to_markdown(), s.to_json(), s.to_csv()
    s.totals["macs"]                          # 15,470,264,320 multiply-adds
    receptive_fields(net, (3, 224, 224))["features.28"].size   # (196, 196)

Modules: ``shapes`` (``infer_shapes``, per-layer shape rules), ``summary``,
``receptive``, ``reconcile`` (``explain_counts``), ``command`` (``cnnkit summary``).
"""

from .command import add_summary_parser, native_spec, run_summary
from .receptive import ReceptiveField, receptive_fields
from .reconcile import explain_counts
from .shapes import LayerRecord, LayerShape, Window, infer_shapes, register_shape_rule, shape_rule
from .summary import JSON_SCHEMA, Summary, SummaryRow, summary

__all__ = ["infer_shapes", "register_shape_rule", "shape_rule", "LayerRecord", "LayerShape", "Window",
           "summary", "Summary", "SummaryRow", "JSON_SCHEMA", "receptive_fields", "ReceptiveField",
           "explain_counts", "add_summary_parser", "run_summary", "native_spec"]
