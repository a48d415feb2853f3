"""The worker process: receives batches, runs the model, replies. Imports nothing of the gateway."""
