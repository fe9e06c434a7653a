"""The default synthetic set, generated on first use into a cache directory and reused.

Cache root: ``$ADASEG_CACHE`` if set, else ``~/.cache/adaseg``. The folder name carries
the generator version and every argument, so a changed generator or argument never
reuses stale files. Concurrent first uses are safe: each process generates into its own
temporary directory and the first rename wins; the others discard theirs.
"""

from __future__ import annotations

import os
import shutil
import sys

from adaseg.data.synthetic.generate import GENERATOR_VERSION, write_synthetic

DEFAULT_N_TRAIN = 1000
DEFAULT_N_VAL = 200
DEFAULT_SIZE = 128
DEFAULT_SEED = 0


def cache_root() -> str:
    return os.environ.get("ADASEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "adaseg")


def synthetic_root(*, n_train: int = DEFAULT_N_TRAIN, n_val: int = DEFAULT_N_VAL, size: int = DEFAULT_SIZE,
                   seed: int = DEFAULT_SEED) -> str:
    """Folder of the synthetic set with these arguments, generating it if absent."""
    path = os.path.join(cache_root(),
                        f"synthetic-v{GENERATOR_VERSION}-s{size}-n{n_train}-{n_val}-seed{seed}")
    if os.path.isdir(path):
        return path
    os.makedirs(cache_root(), exist_ok=True)
    scratch = path + f".pid{os.getpid()}"
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    # one line, once per cache: first use costs seconds and the user should know why
    print(f"adaseg: generating the synthetic set ({n_train} train + {n_val} val, {size} px, seed {seed}) "
          f"into {path} (first use only)", file=sys.stderr)
    write_synthetic(scratch, n_train=n_train, n_val=n_val, size=size, seed=seed)
    try:
        os.rename(scratch, path)
    except OSError:
        if not os.path.isdir(path):  # the rename failed for another reason than a concurrent winner
            raise
        shutil.rmtree(scratch, ignore_errors=True)
    return path
