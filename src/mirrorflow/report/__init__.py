"""Reports from a results store: Markdown + CSV tables and PNG figures; see docs/sweeps.md."""

from mirrorflow.report.report import GroupStats, ReportFiles, group_runs, metric_stats, write_report

__all__ = ["GroupStats", "ReportFiles", "group_runs", "metric_stats", "write_report"]
