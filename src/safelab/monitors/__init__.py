"""Monitors: detectors scored against ground truth.

A monitor is an Inspect scorer whose value is "how suspicious is this sample" (higher = more
likely deceptive/unsafe): :func:`probe_monitor` reads a linear probe over the response,
:func:`judge_monitor` asks a judge model. :mod:`safelab.monitors.roc` compares monitors on an
Inspect log whose samples carry a ground-truth label in their metadata.
"""

from safelab.monitors.judge_monitor import judge_monitor
from safelab.monitors.probe_monitor import probe_monitor
from safelab.monitors.task import monitor_replies

__all__ = ["judge_monitor", "monitor_replies", "probe_monitor"]
