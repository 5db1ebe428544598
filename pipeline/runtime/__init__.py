"""The machinery beneath the stages: the Dask cluster, process lifetimes, experiment loggers."""
