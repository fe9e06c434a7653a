"""The console script's group answers --help and --version."""

from click.testing import CliRunner

import adaseg
from adaseg.cli.main import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert adaseg.__version__ in result.output


def test_help_lists_recipe():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "fit-gate" in result.output
