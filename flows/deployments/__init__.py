"""prefect.yaml's deployments: run them on this machine (`run_locally`, `mmpipe serve`) or put
them on a Prefect server's work pool (`deploy`, `mmpipe deploy`)."""
