"""Studies: run a grid of pretraining and downstream runs with caching, and report on it.

``load_config(path)`` -> :class:`StudyConfig`; ``run_study(cfg, out)`` runs what is not
finished yet; ``write_report(out)`` writes ``results.csv``, ``report.md``, ``report.html``.
"""

from awcl.study.config import StudyConfig, load_config, parse_config
from awcl.study.report import write_report
from awcl.study.runner import Executors, plan_study, run_study

__all__ = [
    "Executors",
    "StudyConfig",
    "load_config",
    "parse_config",
    "plan_study",
    "run_study",
    "write_report",
]
