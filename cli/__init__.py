"""adaseg's command line (installed as the package ``adaseg.cli``)."""
