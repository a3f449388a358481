"""Where work runs side by side: a stage's partitions (`partitions`, inline or one Prefect task per
part) and the Dask cluster behind them and behind sweep cells (`dask_cluster`). May import
`tasks.faults` and `mmcore`."""
