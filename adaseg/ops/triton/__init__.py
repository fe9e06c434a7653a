"""Triton kernels for patch pausing (PAUMER); kernels and their launchers only.

Importing this package imports triton, so only :mod:`adaseg.ops.pausing` imports it, and
only once it has chosen the Triton backend. Every kernel has a pure-PyTorch twin in
:mod:`adaseg.ops.reference` that tests compare it against (on CPU under
``TRITON_INTERPRET=1``).
"""
