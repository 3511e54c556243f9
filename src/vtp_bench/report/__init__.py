"""Results JSON files -> comparison tables (markdown / CSV / LaTeX) with a protocol footer, and plots.

- ``results``: finding and reading results files (``collect_results``).
- ``protocol``: the evaluation protocol of a result, the merge check, the footer.
- ``rows``: rows (method, checkpoint, re-ranking), the training seeds of one experiment folded into one row.
- ``table``: rows x column groups (dataset, split, task), each cell with its interval; the rows not significantly
  worse than the column's best marked (``significance``, on the statistics of ``stats``).
- ``plots``: the main metric per method and dataset (chance drawn), and training curves from the runs' metrics.csv.
"""

from vtp_bench.report.protocol import ProtocolMismatchError, ReportError, check_protocols, protocol_of
from vtp_bench.report.results import collect_results, is_result, task_of
from vtp_bench.report.table import FORMATS, format_table

__all__ = ["FORMATS", "ProtocolMismatchError", "ReportError", "check_protocols", "collect_results", "format_table",
           "is_result", "plot_curves", "plot_results", "protocol_of", "task_of"]


def plot_results(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See ``report.plots.plot_results`` (imported lazily: matplotlib is slow to import)."""
    from vtp_bench.report.plots import plot_results as f

    return f(*args, **kwargs)


def plot_curves(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See ``report.plots.plot_curves``."""
    from vtp_bench.report.plots import plot_curves as f

    return f(*args, **kwargs)
