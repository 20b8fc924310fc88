"""Core: components, tasks, results, models, accuracy metrics, option types, and the one
patch-path engine every estimator runs on. Imports nothing else from the package."""
