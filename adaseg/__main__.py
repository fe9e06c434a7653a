"""``python -m adaseg`` == ``adaseg``."""

from adaseg.cli.main import main

main()
