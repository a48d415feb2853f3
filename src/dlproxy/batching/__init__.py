"""Dynamic batching: per-instance queues that flush into batches."""
