"""The bounds and names a Run spec accepts, as plain values (no pydantic).

The spec models (:mod:`pyro.spec.model`) are built from them, and so are the CLI's flags,
which check ``--vcpus 0`` before importing the models costs anything.
"""

from __future__ import annotations

#: ``resources.vcpus``: least and most.
VCPUS = (1, 32)
#: ``resources.memoryMiB``: least and most.
MEMORY_MIB = (128, 65536)
#: ``timeoutSeconds`` (the run's and a step's): least and most.
TIMEOUT_SECONDS = (1, 86400)
#: ``backend``: the VMM backends, and ``auto`` (the best usable one).
BACKENDS = ("auto", "firecracker", "qemu-kvm", "qemu-tcg")
#: ``matrix``: the most instances one Run spec may expand into (a hostile spec cannot
#: make more), and the most axes.
MATRIX_INSTANCES = 256
MATRIX_AXES = 8
#: ``retries``: least and most.
RETRIES = (0, 5)
