"""Dispatching many runs: a matrix's instances here, or any run over a Ray cluster.

Domain-level orchestration above :mod:`pyro.execute`: it expands a prepared Run into
instances, plans them, hands them to an executor (this host's start slots, or Ray), and
merges what comes back. Ray is imported only by :mod:`pyro.cluster.ray_exec`, and only
when a cluster is named.
"""
