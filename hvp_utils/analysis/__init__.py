"""Analysis built on the estimators: diagnosis, reliability and bounds, patch paths,
Screen-Flag-Fix, circuits, accuracy-against-compute runs and independent reference checks."""
