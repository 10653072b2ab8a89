"""`tfbig report`: one self-contained HTML page per run directory.

Reads what train, compress, export, validate and serve left in a run
directory (only config.yaml is required) and writes RUN_DIR/report/:
index.html, report.json and one PNG per figure. Imports no TensorFlow, so it
answers in a second or two.
"""

from tfbig.report.collect import ReportError, collect_run
from tfbig.report.html import ReportFiles, write_report

__all__ = ["ReportError", "ReportFiles", "collect_run", "write_report"]
