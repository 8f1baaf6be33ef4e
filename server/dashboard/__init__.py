"""The live dashboard: static HTML and a charting library (uPlot, vendored in `static/`) served by the server."""
