"""Reports built from the committed run of record (metrics files written by the pipeline)."""
