"""Closed-loop evaluation in MetaDrive: offline assets, ScenarioNet index files, the simulator ->
planner adapter, the waypoint controller, the rollout loop, NAVSIM-style metrics and the report.

Entry point: ``python eval/closed_loop.py --help``.
"""
