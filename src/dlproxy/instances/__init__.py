"""Model instances: worker processes (local), Ray actors, remote servers; and the pool of them."""
