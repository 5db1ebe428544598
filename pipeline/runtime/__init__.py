"""The machinery beneath the stages: the Dask cluster and its workers, train ranks, process lifetimes, temporary
folders, the stage clock, live step lines and the experiment loggers. Nothing here imports a stage."""
