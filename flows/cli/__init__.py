"""The `mmpipe` command (`commands`), the checks that reject a bad command line or config before
Prefect starts (`preflight`), and the run folder's environment (`environment`)."""
