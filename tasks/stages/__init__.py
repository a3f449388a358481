"""The five stage tasks, one module each, named after the stage (`preprocessing`,
`feature_extraction`, `shared_space`, `training`, `testing`); `table` runs them in order through
the cache, and `verify` checks every stage folder. May import `tasks.engine`, `tasks.parallel`,
`tasks.tracking` and `mmcore`."""
