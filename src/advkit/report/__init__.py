"""Reports: tables (CSV, Markdown), figures (matplotlib, headless), the HTML/Markdown document model, the run
report of a transfer study and the zoo's clean-accuracy report. The papers' reproductions are
:mod:`advkit.reproduce`."""
