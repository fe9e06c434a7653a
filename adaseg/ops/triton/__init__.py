"""Triton kernels for patch pausing (PAUMER), their launchers and their registered ops.

* :mod:`.entropy` -- fused auxiliary decoder + softmax entropy (no logits in memory)
* :mod:`.topk` -- top-k keep: rank-count keep flags, compaction of indices and kept rows
* :mod:`.rows` -- row moves (gather / scatter / zero) behind gather, assemble and the assembler
* :mod:`.library` -- the above as ``torch.ops.adaseg_pause.*`` custom ops with autograd

Its submodules import triton, so only :mod:`adaseg.ops.pausing` imports them, and only once
it has chosen the Triton backend. Every kernel has a pure-PyTorch twin in
:mod:`adaseg.ops.reference` that tests compare it against (on CPU under
``TRITON_INTERPRET=1``).
"""
