"""Benchmarks: the HTTP load generator (``dlproxy bench``) and the offline model ceiling.

Never imported by the server: this is client-side code.
"""
