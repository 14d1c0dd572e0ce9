"""Reports: tables (CSV, Markdown), figures (matplotlib, headless) and run reports."""
