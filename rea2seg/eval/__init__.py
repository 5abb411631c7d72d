"""Evaluation: ReasonSeg / ReasonSeg-SGDR data (LISA's layout and the parquet copies), LISA's metrics, resumable runs
of the pipeline over a dataset, and the mask-scoring export for scorer training."""
