"""Experiments: config schema and presets, planner, executors, results store."""
