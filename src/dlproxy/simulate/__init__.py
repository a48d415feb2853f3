"""Discrete-event simulation of scaling policies against load traces (``dlproxy simulate``).

Never imported by the server: it drives the real policy objects and the controller's limits on a
virtual clock against modelled instances, so policies can be compared in seconds, not hours.
"""
