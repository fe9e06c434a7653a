"""Test-wide settings.

Triton kernels run on CPU tensors under the interpreter; the variable must be set before
triton is first imported, hence here at conftest import time.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
