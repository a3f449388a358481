"""The stage engine: what makes a stage a cached, verified, crash-safe Prefect task.

`keys` (cache key, code `fingerprint`, output folder) -> `outputs` (temporary folder, marker,
verification) -> `skeleton` (the task every stage shares) and `cache` (hit or miss, and why,
under the stage's `locks`; `results`: what Prefect persists, as JSON); `recovery` cleans up
after crashed runs. May import
`tasks.parallel`, `tasks.tracking`, `tasks.faults` and `mmcore`; never a stage.
"""
