"""Operator tools: launch a local cluster, chaos runs and their checker, network namespaces, the dashboard, backups."""
