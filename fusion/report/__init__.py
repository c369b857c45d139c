"""The study report: tidy CSV tables, figures (SVG and PNG) and one self-contained HTML."""
