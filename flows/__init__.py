"""Flows that wire tasks, and what starts them.

- `pipeline` (the five stages), `sweep` (cells of a grid on Dask), `compare` (a preset sweep over
  learning modes): flows only, no logic of their own.
- `cli/`: the `mmpipe` command, its checks before any work and the run environment.
- `server/`: the local Prefect server a run folder starts, and its idle watchdog.
- `deployments/`: prefect.yaml's deployments, run on this machine or put on a server.

May import `tasks` and `mmcore`; inside: cli -> deployments | server -> compare -> sweep ->
pipeline -> errors (pyproject.toml's contracts).
"""
