"""Result caching: one ``Cache`` interface, a shared in-memory mechanism, and small eviction
policies registered by name (``lru``, ``lfu``, ``fifo``, ``two_level``, ``tinylfu``)."""
