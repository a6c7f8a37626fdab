"""Model cards rendered from what was measured (report.json, eval results, export report)."""
