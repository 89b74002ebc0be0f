"""CLI output under failure and odd numbers: unexpected exceptions are still one line (the
traceback only with --debug), ^C is exit code 130, --json is strict JSON (NaN -> null),
plots land exactly where the JSON says."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.reliability.exact import raises_exactly
from torch_mi.cli.commands import predict as predict_cmd
from torch_mi.cli.common import json_safe

from .test_cli_catalogue import run_cli, strict_json


@pytest.fixture(scope="module")
def tiny(tiny_models) -> str:
    return str(tiny_models["llama"].path)


def _raise(exc: BaseException):
    def run(args):
        raise exc

    return run


def _break_predict(monkeypatch, exc: BaseException) -> None:
    """Make ``torch-mi predict`` raise ``exc`` (argparse stores run at parser build time)."""
    monkeypatch.setattr(predict_cmd, "run", _raise(exc))


def test_an_unexpected_exception_is_one_line_with_the_debug_hint(monkeypatch, capsys):
    _break_predict(monkeypatch, RuntimeError("boom\nsecond line of detail"))
    run = run_cli(monkeypatch, capsys, ["predict", "Hi"])
    assert run.code == 1 and type(run.exc) is RuntimeError
    assert run.one_line_error() == ("torch-mi predict: internal error (RuntimeError): boom "
                                    "(+1 more lines; rerun with --verbose); rerun with --debug "
                                    "for the traceback")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_then_the_line(monkeypatch, capsys, where):
    _break_predict(monkeypatch, KeyError("no_such_key"))
    argv = ["--debug", "predict", "Hi"] if where == "before" else ["predict", "Hi", "--debug"]
    run = run_cli(monkeypatch, capsys, argv)
    assert run.code == 1 and type(run.exc) is KeyError
    lines = run.err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2] == "KeyError: 'no_such_key'"
    assert lines[-1] == "torch-mi predict: internal error (KeyError): 'no_such_key'"


def test_verbose_keeps_every_line_of_the_message(monkeypatch, capsys):
    _break_predict(monkeypatch, RuntimeError("first\nsecond"))
    run = run_cli(monkeypatch, capsys, ["predict", "Hi", "--verbose"])
    assert run.code == 1 and "first\nsecond" in run.err and "Traceback" not in run.err


def test_keyboard_interrupt_is_exit_code_130(monkeypatch, capsys):
    _break_predict(monkeypatch, KeyboardInterrupt())
    run = run_cli(monkeypatch, capsys, ["predict", "Hi"])
    assert run.code == 130 and type(run.exc) is KeyboardInterrupt
    assert run.one_line_error() == "torch-mi: interrupted"


def test_an_os_error_is_an_ordinary_error_line(monkeypatch, capsys):
    _break_predict(monkeypatch, PermissionError(13, "Permission denied", "/root/x.png"))
    run = run_cli(monkeypatch, capsys, ["predict", "Hi"])
    assert run.code == 1 and type(run.exc) is PermissionError
    assert run.one_line_error() == ("torch-mi predict: error: [Errno 13] Permission denied: "
                                    "'/root/x.png'")


def test_a_broken_library_call_in_a_real_command_is_one_line(monkeypatch, capsys, tiny):
    """A bug below the CLI (here: the tokenizer raising TypeError) is not a traceback."""
    from torch_mi.model import MIModel

    def broken(self, text, *args, **kwargs):
        raise TypeError("encode() got an unexpected keyword argument 'x'")

    monkeypatch.setattr(MIModel, "encode", broken)
    run = run_cli(monkeypatch, capsys, ["predict", "Hi", "--json", "--model", tiny])
    assert run.code == 1 and type(run.exc) is TypeError and run.out == ""
    assert run.one_line_error().startswith("torch-mi predict: internal error (TypeError): encode()")


def test_json_safe_turns_non_finite_numbers_into_null():
    data = {"nan": math.nan, "inf": math.inf, "neg": -math.inf, "ok": 1.5, 3: "int key",
            "nested": [(math.nan, 2), {"t": torch.tensor([1.0, float("nan")])}],
            "scalar": torch.tensor(float("inf")), "path": Path("a/b.png")}
    assert json_safe(data) == {"nan": None, "inf": None, "neg": None, "ok": 1.5, "3": "int key",
                               "nested": [[None, 2], {"t": [1.0, None]}], "scalar": None,
                               "path": "a/b.png"}
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        json_safe(object())


def test_patching_identical_prompts_gives_strict_json(monkeypatch, capsys, tiny):
    """clean == corrupted: every normalised effect is 0/0. The JSON must still parse with a
    strict parser, each non-finite number written as null."""
    run = run_cli(monkeypatch, capsys, ["patch", "Hello", "Hello", "--json", "--model", tiny])
    assert run.code == 0 and run.err == ""
    data = strict_json(run.out)
    effects = [v for row in data["effect"] for v in row]
    assert effects and all(v is None for v in effects)  # 0/0 is NaN, written as null
    assert data["best"]["effect"] is None and "NaN" not in run.out


JSON_COMMANDS = [
    ["lens", "Hello", "world"],
    ["predict", "Hello"],
    ["generate", "Hi", "--max-new-tokens", "3", "--ignore-eos", "--temperature", "0.7",
     "--seed", "3"],
    ["attention", "Hello"],
    ["knockout", "Hello"],
    ["steer", "Hello", "--doses", "0,1,2"],
    ["inspect", "--layers", "0"],
    ["memory", "--seq-len", "8", "--no-run"],
]


@pytest.mark.parametrize("argv", JSON_COMMANDS, ids=[c[0] for c in JSON_COMMANDS])
def test_every_json_output_is_strict_json(monkeypatch, capsys, tiny, argv):
    run = run_cli(monkeypatch, capsys, [*argv, "--json", "--model", tiny])
    assert run.code == 0 and run.exc is None
    assert isinstance(strict_json(run.out), (dict, list))


def test_a_valid_plot_is_written_where_the_json_says(monkeypatch, capsys, tiny, tmp_path):
    png = tmp_path / "grid.png"
    run = run_cli(monkeypatch, capsys, ["attention", "Hello", "--plot", str(png), "--json",
                                        "--model", tiny])
    assert run.code == 0
    assert strict_json(run.out)["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["grid.png"]


def test_several_lens_prompts_number_their_plots(monkeypatch, capsys, tiny, tmp_path):
    base = tmp_path / "lens.pdf"
    run = run_cli(monkeypatch, capsys, ["lens", "ab", "cd", "--plot", str(base), "--json",
                                        "--model", tiny])
    assert run.code == 0
    written = [entry["plot"] for entry in strict_json(run.out)]
    assert written == [str(tmp_path / "lens-1.pdf"), str(tmp_path / "lens-2.pdf")]
    assert sorted(os.listdir(tmp_path)) == ["lens-1.pdf", "lens-2.pdf"]


def test_the_library_plot_functions_check_the_path_too(tmp_path):
    from torch_mi.errors import InputError
    from torch_mi.plots import plot_curve

    with raises_exactly(InputError, match=r"path '.*' is a folder"):
        plot_curve([0, 1], [0, 1], tmp_path, xlabel="x", ylabel="y")
    with raises_exactly(InputError, match=r"path must be a file name .*got 3"):
        plot_curve([0, 1], [0, 1], 3, xlabel="x", ylabel="y")
    assert os.listdir(tmp_path) == []



def test_a_closed_stdout_is_a_quiet_exit_code_1(tiny):
    """``torch-mi ... | head -c 0``: the reader is gone before the output is written. The
    process must end with exit code 1 and at most one line on stderr, never a traceback
    (or Python's "Exception ignored ... BrokenPipeError" at exit)."""
    for argv in (["predict", "Hi"], ["predict", "Hi", "--json"]):
        child = subprocess.Popen([sys.executable, "-m", "torch_mi", *argv, "--model", tiny],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
        child.stdout.close()  # before the model has even loaded
        err = child.stderr.read().decode()
        assert child.wait(timeout=120) == 1, err
        assert "Traceback" not in err and "Exception ignored" not in err
        assert err.count("\n") <= 1, err
