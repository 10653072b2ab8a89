"""`tfbig monitor`: logged traffic against a version's reference statistics, with TFX Data
Validation's comparators (see `tfbig.monitor.compare`), for cron, CI and Prometheus.

Reads request logs (tfbig.serving.request_log) and reference statistics
(tfbig.export.reference_stats), and the run report's page helpers; never the
training code.
"""

from tfbig.monitor.output import MonitorFiles, format_result, write_outputs
from tfbig.monitor.run import MonitorError, MonitorOptions, monitor
from tfbig.monitor.textfile import write_textfile
from tfbig.monitor.thresholds import Thresholds, ThresholdsError
from tfbig.monitor.timespec import TimeSpecError, parse_duration, parse_time

__all__ = ["MonitorError", "MonitorFiles", "MonitorOptions", "Thresholds", "ThresholdsError", "TimeSpecError",
           "format_result", "monitor", "parse_duration", "parse_time", "write_outputs", "write_textfile"]
