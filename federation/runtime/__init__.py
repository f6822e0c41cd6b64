"""Orchestration: the agent's TaskGroup, watching, publishing, consuming and reconciling."""
