"""Pictures of a CNN: learned filters, feature maps, saliency and Grad-CAM, receptive
fields, training curves, confusion matrices, and a self-contained HTML report of a run.

    from cnnkit.cli import load_model
    from cnnkit.viz import plot_filters, write_html_report
    model, meta = load_model("runs/train")
    plot_filters(model, "filters.png")          # the first conv layer's kernels
    write_html_report("runs/train", model)      # runs/train/report.html

Every plot uses matplotlib's Agg backend and writes PNG or SVG (by the file's suffix)
atomically. The command line: ``cnnkit viz filters|features|saliency|receptive|curves|confusion|report``
(:mod:`cnnkit.viz.command`). Modules: ``filters`` (filter grids, feature maps), ``saliency``
(input gradient, Grad-CAM), ``receptive``, ``run_plots`` (curves, confusion), ``html_report``.
"""

from .command import add_viz_parser, run_viz
from .filters import feature_maps, filter_tiles, filters_figure, plot_feature_maps, plot_filters
from .html_report import write_html_report
from .receptive import plot_receptive_field
from .run_plots import confusion_figure, curves_figure, plot_confusion, plot_curves
from .saliency import grad_cam, plot_saliency, saliency

__all__ = ["add_viz_parser", "run_viz", "write_html_report", "plot_filters", "filters_figure", "filter_tiles",
           "feature_maps", "plot_feature_maps", "saliency", "grad_cam", "plot_saliency", "plot_receptive_field",
           "plot_curves", "plot_confusion", "curves_figure", "confusion_figure"]
