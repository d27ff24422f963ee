"""How every benchmark mode ends on a user's input error (scripts/benchmark/command_line.py)."""

from __future__ import annotations

import pytest

from scripts.benchmark.command_line import run_mode


def _raise(error: BaseException):
    def run() -> None:
        raise error

    return run


@pytest.mark.parametrize("error", [FileNotFoundError("data/x.nii.gz: not found"), ValueError("data/x.nii.gz: bad")])
def test_an_input_error_is_one_line_naming_the_mode_and_exit_code_2(error, capsys) -> None:
    assert run_mode("accuracy", _raise(error)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"python -m scripts.benchmark accuracy: {error}"]


def test_a_missing_optional_package_is_an_input_error(capsys) -> None:
    assert run_mode("robustness", _raise(ImportError("antspyx is not installed"))) == 2
    assert capsys.readouterr().err.strip() == "python -m scripts.benchmark robustness: antspyx is not installed"


def test_success_is_exit_code_0_and_a_bug_is_not_hidden(capsys) -> None:
    assert run_mode("warning", lambda: 42) == 0 and capsys.readouterr().err == ""
    with pytest.raises(ZeroDivisionError):
        run_mode("warning", lambda: 1 / 0)
