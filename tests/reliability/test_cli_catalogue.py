"""CLI catalogue: every bad option value is one line on stderr naming the option, exit code 1
(2 for argparse usage errors), no traceback, nothing half-written on stdout, and the exact
MIError subclass behind the message. Most cases fail before the model loads."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

import pytest

import torch_mi as mi
from torch_mi.cli import main as cli_main


@dataclass
class CliRun:
    code: int
    out: str
    err: str
    exc: BaseException | None  # what reached the CLI's error report (None: success or usage)

    def one_line_error(self) -> str:
        """The stderr text; fails unless it is exactly one line without a traceback."""
        assert self.err.endswith("\n") and self.err.count("\n") == 1, self.err
        assert "Traceback" not in self.err
        return self.err.strip()


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as every non-Python JSON parser does."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def run_cli(monkeypatch, capsys, argv: list[str]) -> CliRun:
    """``torch-mi *argv`` in this process, with the reported exception captured."""
    seen: list[BaseException] = []
    report = cli_main._report

    def spy(args, exc):
        seen.append(exc)
        return report(args, exc)

    monkeypatch.setattr(cli_main, "_report", spy)
    capsys.readouterr()  # drop what earlier steps printed
    code = cli_main.main(argv)
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err, seen[0] if seen else None)


@pytest.fixture(scope="module")
def tiny(tiny_models) -> str:
    return str(tiny_models["llama"].path)


# (id, argv, error class, regex the one-line message must match: it names the option)
VALUE_ERRORS = [
    ("steer_scale_nan_json", ["steer", "Hi there", "--positive", "a", "--negative", "b",
                              "--scale", "nan", "--json"], mi.InputError,
     r"--scale must be a finite number, got nan"),
    ("steer_scale_inf", ["steer", "Hi", "--scale", "inf"], mi.InputError, r"--scale .*finite"),
    ("steer_doses_nan", ["steer", "Hi", "--doses", "0,1,nan"], mi.InputError,
     r"--doses must be a finite number, got nan"),
    ("steer_doses_text", ["steer", "Hi", "--doses", "low,high"], mi.InputError,
     r"--doses must be comma-separated numbers, got 'low,high'"),
    ("steer_positive_alone", ["steer", "Hi", "--positive", "love"], mi.InputError,
     r"needs both --positive and --negative"),
    ("steer_empty_positive", ["steer", "Hi", "--positive", "", "--negative", "b"],
     mi.InputError, r"--positive must not be empty"),
    ("steer_empty_target", ["steer", "Hi", "--target", ""], mi.InputError,
     r"--target must not be empty"),
    ("steer_max_new_tokens_zero", ["steer", "Hi", "--max-new-tokens", "0"], mi.InputError,
     r"--max-new-tokens must be >= 1, got 0"),
    ("generate_temperature_nan", ["generate", "Hi", "--temperature", "nan"], mi.InputError,
     r"--temperature must be a finite number, got nan"),
    ("generate_temperature_negative", ["generate", "Hi", "--temperature", "-0.5"],
     mi.InputError, r"--temperature must be in \[0, inf\], got -0.5"),
    ("generate_top_k_zero", ["generate", "Hi", "--top-k", "0"], mi.InputError,
     r"--top-k must be >= 1, got 0"),
    ("generate_top_p_zero", ["generate", "Hi", "--top-p", "0"], mi.InputError,
     r"--top-p must be in \(0, 1\], got 0"),
    ("generate_top_p_above_one", ["generate", "Hi", "--top-p", "1.5"], mi.InputError,
     r"--top-p must be in \(0, 1\], got 1.5"),
    ("generate_seed_negative", ["generate", "Hi", "--seed", "-1"], mi.InputError,
     r"--seed must be in \[0, 2\*\*64 - 1\], got -1"),
    ("generate_seed_2_70", ["generate", "Hi", "--seed", str(2 ** 70)], mi.InputError,
     r"--seed must be in .*got 1180591620717411303424"),
    ("generate_negative_tokens", ["generate", "Hi", "--max-new-tokens", "-3"], mi.InputError,
     r"--max-new-tokens must be >= 0, got -3"),
    ("generate_empty_stop", ["generate", "Hi", "--stop", ""], mi.InputError,
     r"--stop must not be empty"),
    ("attention_top_k_negative", ["attention", "Hi", "--top-k", "-1"], mi.InputError,
     r"--top-k must be >= 1, got -1"),
    ("attention_layer_arabic_digit", ["attention", "Hi", "--layer", "١"], mi.InputError,
     r"--layer must be an integer such as 3 or -1, got '١'"),
    ("attention_layer_5000_digits", ["attention", "Hi", "--layer", "9" * 5000], mi.InputError,
     r"--layer 9{20} is out of range: the model has 2 layers"),
    ("attention_layer_out_of_range", ["attention", "Hi", "--layer", "-3"], mi.InputError,
     r"--layer -3 is out of range: the model has 2 layers \(0..1; negative values count"),
    ("attention_position_outside", ["attention", "Hi", "--position", "40"], mi.InputError,
     r"--position 40 is outside the 3-token prompt"),
    ("knockout_top_k_negative", ["knockout", "Hello", "--top-k", "-5"], mi.InputError,
     r"--top-k must be >= 1, got -5"),
    ("knockout_heads_text", ["knockout", "Hello", "--heads", "0,x"], mi.InputError,
     r"--heads must be comma-separated integers .*got '0,x'"),
    ("knockout_head_out_of_range", ["knockout", "Hello", "--heads", "0,7"], mi.InputError,
     r"--heads: 7 is out of range; the model has 4 attention heads"),
    ("knockout_edge_one_number", ["knockout", "Hello", "--edge", "3"], mi.InputError,
     r"--edge must be FROM,TO integers, got '3'"),
    ("knockout_edge_not_causal", ["knockout", "Hello", "--edge", "0,3"], mi.InputError,
     r"--edge 0,3: \(0,3\) is not a causal edge of a 6-token prompt"),
    ("knockout_empty_target", ["knockout", "Hello", "--target", ""], mi.InputError,
     r"--target must not be empty"),
    ("lens_empty_target", ["lens", "Hi", "--target", ""], mi.InputError,
     r"--target must not be empty"),
    ("lens_top_k_zero", ["lens", "Hi", "--top-k", "0"], mi.InputError,
     r"--top-k must be >= 1, got 0"),
    ("lens_unknown_hook", ["lens", "Hi", "--hook", "resid"], mi.InputError,
     r"--hook: unknown lens hook 'resid'"),
    ("patch_empty_answer", ["patch", "Hello", "Hellp", "--answer", ""], mi.InputError,
     r"--answer must not be empty"),
    ("patch_empty_foil", ["patch", "Hello", "Hellp", "--metric", "logit_diff", "--foil", ""],
     mi.InputError, r"--foil must not be empty"),
    ("inspect_layers_minus_five", ["inspect", "--layers", "-5"], mi.InputError,
     r"--layers must be a count >= 0, or -1 for every layer, got -5"),
    ("predict_top_k_zero", ["predict", "Hi", "--top-k", "0"], mi.InputError,
     r"--top-k must be >= 1, got 0"),
    ("memory_seq_len_zero", ["memory", "--seq-len", "0"], mi.InputError,
     r"--seq-len must be >= 1, got 0"),
    ("memory_batch_zero", ["memory", "--batch", "0"], mi.InputError,
     r"--batch must be >= 1, got 0"),
    ("memory_empty_hook", ["memory", "--hook", ""], mi.InputError, r"--hook must not be empty"),
    ("memory_prompt_and_seq_len", ["memory", "Hi", "--seq-len", "4"], mi.InputError,
     r"give a prompt or --seq-len, not both"),
]


@pytest.mark.parametrize(("argv", "error", "match"), [c[1:] for c in VALUE_ERRORS],
                         ids=[c[0] for c in VALUE_ERRORS])
def test_bad_option_values_are_one_typed_line(monkeypatch, capsys, tiny, argv, error, match):
    run = run_cli(monkeypatch, capsys, [*argv, "--model", tiny])
    assert run.code == 1
    assert type(run.exc) is error
    line = run.one_line_error()
    assert line.startswith(f"torch-mi {argv[0]}: error: ")
    assert re.search(match, line), line
    assert run.out == ""  # nothing half-written: no bare NaN, no partial table


# (id, argv, regex naming the option) for argparse's own type checks: exit code 2
USAGE_ERRORS = [
    ("generate_top_k_fraction", ["generate", "Hi", "--top-k", "2.5"],
     r"torch-mi generate: error: argument --top-k: invalid int value: '2.5'"),
    ("steer_scale_word", ["steer", "Hi", "--scale", "big"],
     r"argument --scale: invalid float value: 'big'"),
    ("predict_missing_prompt", ["predict"], r"the following arguments are required: prompt"),
    ("predict_unknown_option", ["predict", "Hi", "--bogus"], r"unrecognized arguments: --bogus"),
    ("unknown_command", ["frobnicate"], r"argument COMMAND: invalid choice: 'frobnicate'"),
    ("patch_unknown_metric", ["patch", "a", "b", "--metric", "bleu"],
     r"argument --metric: invalid choice: 'bleu'"),
    ("memory_unknown_preset", ["memory", "--capture", "everything"],
     r"argument --capture: invalid choice: 'everything'"),
]


@pytest.mark.parametrize(("argv", "match"), [c[1:] for c in USAGE_ERRORS],
                         ids=[c[0] for c in USAGE_ERRORS])
def test_usage_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, argv, match):
    run = run_cli(monkeypatch, capsys, argv)
    assert run.code == 2 and run.exc is None and run.out == ""
    line = run.one_line_error()
    assert re.search(match, line), line
    assert line.endswith("--help)")  # says where to look


def test_no_command_prints_help_and_exit_code_2(monkeypatch, capsys):
    run = run_cli(monkeypatch, capsys, [])
    assert run.code == 2 and "usage: torch-mi" in run.out and run.err == ""


def test_memory_bomb_is_refused_before_running_with_the_estimate(monkeypatch, capsys, tiny):
    start = time.perf_counter()
    run = run_cli(monkeypatch, capsys, ["memory", "--seq-len", "256", "--batch", "1000000",
                                        "--device", "cpu", "--model", tiny])
    assert time.perf_counter() - start < 5  # the tiny model loads in ~0.1 s; nothing runs
    assert run.code == 1 and type(run.exc) is mi.MemoryReportError
    line = run.one_line_error()
    assert "batch 1000000 x 256 tokens needs about 812,500 MB" in line
    assert "MB of RAM is free on cpu; refusing to run it; --no-run" in line


def test_memory_bomb_estimate_alone_still_works(monkeypatch, capsys, tiny):
    run = run_cli(monkeypatch, capsys, ["memory", "--seq-len", "256", "--batch", "1000000",
                                        "--no-run", "--json", "--device", "cpu", "--model", tiny])
    assert run.code == 0 and run.exc is None
    data = strict_json(run.out)
    assert data["measured"] is None and data["estimate"]["forward_mb"] == pytest.approx(812500)


def test_memory_beyond_the_context_returns_at_once(monkeypatch, capsys, tiny):
    start = time.perf_counter()
    run = run_cli(monkeypatch, capsys, ["memory", "--seq-len", "1000000", "--device", "cpu",
                                        "--model", tiny])
    assert time.perf_counter() - start < 5
    assert run.code == 1 and type(run.exc) is mi.InputError, repr(run.exc)
    line = run.one_line_error()
    assert line == ("torch-mi memory: error: --seq-len 1000000, which needs 1000000 positions, "
                    "beyond this model's context of 256 (max_position_embeddings); give "
                    "--seq-len 256 or less")


def test_memory_of_a_prompt_beyond_the_context_names_the_prompt(monkeypatch, capsys, tiny):
    run = run_cli(monkeypatch, capsys, ["memory", "a" * 300, "--device", "cpu", "--model", tiny])
    assert run.code == 1 and type(run.exc) is mi.InputError, repr(run.exc)
    assert re.search(r"error: the prompt has 30\d tokens, .* beyond this model's context of 256",
                     run.one_line_error())


def test_memory_at_exactly_the_context_still_runs(monkeypatch, capsys, tiny):
    run = run_cli(monkeypatch, capsys, ["memory", "--seq-len", "256", "--json", "--device", "cpu",
                                        "--model", tiny])
    assert run.code == 0 and run.exc is None
    assert strict_json(run.out)["seq_len"] == 256


@pytest.fixture()
def plot_places(tmp_path):
    folder = tmp_path / "some_dir"
    folder.mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    return {"folder": folder, "fifo": fifo, "tmp": tmp_path}


PLOT_ERRORS = [
    ("existing_folder", lambda p: str(p["folder"]), r"--plot '.*some_dir' is a folder \(.*some_dir\); "
                                                    r"give a file inside it, e.g. .*some_dir/figure.png"),
    ("fifo", lambda p: str(p["fifo"]), r"--plot '.*pipe.png' \(.*pipe.png\) exists and is not a "
                                       r"regular file"),
    ("no_suffix", lambda p: str(p["tmp"] / "heat"), r"--plot '.*heat' has no image suffix .*"
                                                    r"matplotlib would write .*heat.png instead"),
    ("missing_folder", lambda p: str(p["tmp"] / "nope" / "x.png"),
     r"--plot '.*x.png': folder .*nope does not exist"),
    ("empty", lambda p: "", r"--plot must be a file name such as attention.png, got ''"),
]


@pytest.mark.parametrize("command", ["lens", "attention", "steer", "patch", "memory"])
@pytest.mark.parametrize(("target", "match"), [c[1:] for c in PLOT_ERRORS],
                         ids=[c[0] for c in PLOT_ERRORS])
def test_bad_plot_paths_fail_before_any_work(monkeypatch, capsys, tiny, plot_places, command,
                                             target, match):
    argv = {"lens": ["lens", "Hi"], "attention": ["attention", "Hi"], "steer": ["steer", "Hi"],
            "patch": ["patch", "Hello", "Hellp"], "memory": ["memory", "--no-run"]}[command]
    before = sorted(p.name for p in plot_places["tmp"].iterdir())
    start = time.perf_counter()
    run = run_cli(monkeypatch, capsys, [*argv, "--plot", target(plot_places), "--model", tiny])
    assert time.perf_counter() - start < 5  # a FIFO never blocks
    assert run.code == 1 and type(run.exc) is mi.InputError
    assert re.search(match, run.one_line_error())
    assert sorted(p.name for p in plot_places["tmp"].iterdir()) == before  # nothing written
