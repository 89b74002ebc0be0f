"""Catalogue: hostile config.json files and from_pretrained arguments. Every value that
would make later forward passes NaN or crash far from the cause is refused at load, with
a ConfigError naming the key and the value."""

from __future__ import annotations

import json
import os

import pytest

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from tests.reliability.loading_micro import micro_config, refused_without_blocking, write_folder

NAN, INF = float("nan"), float("inf")
GEMMA2 = dict(model_type="gemma2", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1, head_dim=8, vocab_size=32,
              sliding_window=8, query_pre_attn_scalar=8, attn_logit_softcapping=50.0,
              final_logit_softcapping=30.0, rms_norm_eps=1e-6)


def load_with(tmp_path, config: dict, **options):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps(config))
    return mi.MIModel.from_pretrained(folder, device="cpu", **options)


def longrope(**params):
    return {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
            "original_max_position_embeddings": 16, **params}


# (case id, config changes, regex the ConfigError must match: it names the key and value)
BAD_VALUES = [
    ("eps_negative", dict(rms_norm_eps=-1.0), r"'rms_norm_eps' must be positive, got -1\.0"),
    ("eps_zero", dict(rms_norm_eps=0.0), r"'rms_norm_eps' must be positive, got 0\.0"),
    ("eps_nan", dict(rms_norm_eps=NAN), r"'rms_norm_eps' must be a finite number, got nan"),
    ("eps_string", dict(rms_norm_eps="1e-5"), r"'rms_norm_eps' must be a number, got '1e-5'"),
    ("eps_huge_int", dict(rms_norm_eps=10**400), r"'rms_norm_eps' must be a finite number"),
    ("theta_nan", dict(rope_theta=NAN), r"'rope_theta' must be a finite number, got nan"),
    ("theta_negative", dict(rope_theta=-10000.0), r"'rope_theta' must be positive, got -10000"),
    ("theta_inf", dict(rope_theta=INF), r"'rope_theta' must be a finite number, got inf"),
    ("rope_factor_nan", dict(rope_scaling={"rope_type": "linear", "factor": NAN}),
     r"rope_scaling.*'factor' must be a finite number, got nan"),
    ("rope_factor_zero", dict(rope_scaling={"rope_type": "linear", "factor": 0}),
     r"rope_scaling.*'factor' must be positive, got 0"),
    ("rope_factor_missing", dict(rope_scaling={"rope_type": "dynamic"}),
     r"RoPE type 'dynamic' needs a 'factor'"),
    ("rope_scaling_string", dict(rope_scaling="linear"),
     r"'rope_scaling' must be an object, got 'linear'"),
    ("rope_theta_in_parameters_nan", dict(rope_parameters={"rope_type": "default",
                                                           "rope_theta": NAN}),
     r"rope_parameters.*'rope_theta' must be a finite number, got nan"),
    ("llama3_equal_bands", dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
     r"low_freq_factor < high_freq_factor, got 4\.0 and 4\.0"),
    ("llama3_band_string", dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": "1", "high_freq_factor": 4.0}),
     r"'low_freq_factor' must be a number, got '1'"),
    ("yarn_original_zero", dict(rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                              "original_max_position_embeddings": 0}),
     r"'original_max_position_embeddings' must be at least 1, got 0"),
    ("yarn_beta_negative", dict(rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                              "beta_fast": -32}),
     r"'beta_fast' must be positive, got -32"),
    ("yarn_truncate_string", dict(rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                                "truncate": "no"}),
     r"'truncate' must be true/false, got 'no'"),
    ("longrope_wrong_length", dict(rope_scaling=longrope(short_factor=[1.0] * 3)),
     r"longrope 'short_factor' has 3 entries; the rotary dimension 8 needs 4"),
    ("longrope_string_factor", dict(rope_scaling=longrope(long_factor=[1.0, "x", 1.0, 1.0])),
     r"'long_factor\[1\]' must be a number, got 'x'"),
    ("longrope_nan_factor", dict(rope_scaling=longrope(long_factor=[1.0, NAN, 1.0, 1.0])),
     r"'long_factor\[1\]' must be a finite number, got nan"),
    ("partial_rotary_string", dict(partial_rotary_factor="half"),
     r"'partial_rotary_factor' must be a number, got 'half'"),
    ("partial_rotary_above_one", dict(partial_rotary_factor=2.0),
     r"partial_rotary_factor must be in \(0, 1\]"),
    ("hidden_size_float", dict(hidden_size=16.0),
     r"field 'hidden_size' must be a non-negative integer, got 16\.0"),
    ("hidden_size_bool", dict(hidden_size=True),
     r"field 'hidden_size' must be a non-negative integer, got True"),
    ("hidden_size_negative", dict(hidden_size=-16),
     r"field 'hidden_size' must be a non-negative integer, got -16"),
    ("hidden_size_astronomical", dict(hidden_size=10**400),
     r"'hidden_size' = 1000000000+ exceeds 2,147,483,647"),
    ("layers_beyond_any_model", dict(num_hidden_layers=10**12),
     r"'num_hidden_layers' = 1000000000000 exceeds 1,048,576"),
    ("layers_zero", dict(num_hidden_layers=0), r"'num_layers' must be a positive integer, got 0"),
    ("heads_zero", dict(num_attention_heads=0), r"num_attention_heads must be positive"),
    ("kv_heads_not_dividing", dict(num_key_value_heads=3),
     r"num_attention_heads \(2\) must be a multiple of num_key_value_heads \(3\)"),
    ("vocab_string", dict(vocab_size="32"),
     r"field 'vocab_size' must be a non-negative integer, got '32'"),
    ("max_positions_negative", dict(max_position_embeddings=-1),
     r"field 'max_position_embeddings' must be a non-negative integer, got -1"),
    ("max_positions_zero", dict(max_position_embeddings=0),
     r"'max_position_embeddings' must be at least 1, got 0"),
    ("tie_string", dict(tie_word_embeddings="false"),
     r"field 'tie_word_embeddings' must be true/false, got 'false'"),
    ("activation_unknown", dict(hidden_act="relu6"), r"activation 'relu6' is not supported"),
    ("activation_list", dict(hidden_act=["silu"]), r"activation \['silu'\] is not supported"),
    ("unknown_key", dict(my_new_axis=3), r"unexpected config keys \['my_new_axis'\]"),
    ("llama_sliding_window", dict(sliding_window=8), r"'sliding_window' = 8 is not supported"),
    ("eos_string", dict(eos_token_id="two"),
     r"'eos_token_id' must be a non-negative token id or a list of them, got 'two'"),
    ("bos_negative", dict(bos_token_id=-1),
     r"'bos_token_id' must be a non-negative token id or a list of them, got -1"),
]


@pytest.mark.parametrize(("changes", "match"), [c[1:] for c in BAD_VALUES],
                         ids=[c[0] for c in BAD_VALUES])
def test_bad_llama_config_value(tmp_path, changes, match):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tokenizer.json").write_text("{}")  # the ids are checked with it
    with raises_exactly(mi.ConfigError, match=match):
        load_with(tmp_path, micro_config(**changes))


BAD_GEMMA2 = [
    ("softcap_nan", dict(attn_logit_softcapping=NAN),
     r"'attn_logit_softcapping' must be a finite number, got nan"),
    ("softcap_string", dict(final_logit_softcapping="30"),
     r"'final_logit_softcapping' must be a number, got '30'"),
    ("softcap_zero", dict(final_logit_softcapping=0.0),
     r"'final_logit_softcapping' must be positive, got 0\.0"),
    ("query_scalar_zero", dict(query_pre_attn_scalar=0),
     r"'query_pre_attn_scalar' must be positive, got 0"),
    ("window_string", dict(sliding_window="8"), r"'sliding_window' must be an integer, got '8'"),
    ("window_zero", dict(sliding_window=0), r"'sliding_window' must be at least 1, got 0"),
    ("layer_types_wrong_length", dict(layer_types=["full_attention"]),
     r"layer_types has 1 entries but the model has 2 layers"),
    ("layer_types_unknown", dict(layer_types=["full_attention", {"x": 1}]),
     r"layer_types must list .*got \['full_attention', \{'x': 1\}\]"),
]


@pytest.mark.parametrize(("changes", "match"), [c[1:] for c in BAD_GEMMA2],
                         ids=[c[0] for c in BAD_GEMMA2])
def test_bad_gemma2_config_value(tmp_path, changes, match):
    with raises_exactly(mi.ConfigError, match=match):
        load_with(tmp_path, {**GEMMA2, **changes})


def test_gemma3_sliding_window_pattern_zero(tmp_path):
    config = {**GEMMA2, "model_type": "gemma3_text", "sliding_window_pattern": 0}
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        config.pop(key)
    with raises_exactly(mi.ConfigError, match=r"'sliding_window_pattern' must be positive"):
        load_with(tmp_path, config)


# ---- the file itself ---------------------------------------------------------------------
def test_config_that_is_a_json_list(tmp_path):
    with raises_exactly(mi.ConfigError, match=r"config\.json must hold a JSON object, got list"):
        load_with(tmp_path, [micro_config()])


def test_config_without_model_type(tmp_path):
    with raises_exactly(mi.ConfigError, match=r"has no 'model_type'"):
        load_with(tmp_path, micro_config(model_type=...))


def test_config_with_a_numeric_model_type(tmp_path):
    with raises_exactly(mi.ConfigError, match=r"'model_type' must be a string naming the family, got 123"):
        load_with(tmp_path, micro_config(model_type=123))


def test_config_that_is_not_json(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").write_text("{'model_type': 'llama'}")
    with raises_exactly(mi.ConfigError, match=r"config file .*config\.json is not valid JSON"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_config_that_is_not_utf8(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").write_bytes(b'{"model_type": "\xff"}')
    with raises_exactly(mi.ConfigError, match=r"config\.json is not UTF-8 text"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_config_nested_absurdly_deep(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with raises_exactly(mi.ConfigError, match=r"config\.json nests JSON values too deeply"):
        mi.MIModel.from_pretrained(folder, device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_config_that_is_a_fifo_does_not_block(tmp_path):
    """The issue's example: a FIFO config.json used to block forever."""
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    refused_without_blocking(lambda: mi.MIModel.from_pretrained(folder, device="cpu"),
                             mi.ConfigError, r"config\.json is a FIFO \(named pipe\), not a "
                                             r"regular file")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_config_that_is_a_device(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    refused_without_blocking(lambda: mi.MIModel.from_pretrained(folder, device="cpu"),
                             mi.ConfigError, r"config\.json is a character device")


def test_config_that_is_a_directory(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with raises_exactly(mi.ConfigError, match=r"config\.json is a directory, not a regular file"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_generation_config_that_is_a_list(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "generation_config.json").write_text("[2]")
    with raises_exactly(mi.ConfigError, match=r"generation_config\.json must hold a JSON object"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_generation_config_with_a_bad_eos(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "generation_config.json").write_text('{"eos_token_id": [2, "x"]}')
    with raises_exactly(mi.ConfigError, match=r"'eos_token_id' must be a non-negative token id.*"
                                              r"\[2, 'x'\]"):
        mi.MIModel.from_pretrained(folder, device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_tokenizer_json_that_is_a_fifo(tmp_path):
    folder = write_folder(tmp_path / "m")
    os.mkfifo(folder / "tokenizer.json")
    refused_without_blocking(lambda: mi.MIModel.from_pretrained(folder, device="cpu"),
                             mi.TokenizerError, r"tokenizer\.json is a FIFO")


def test_tokenizer_json_that_is_not_json(tmp_path):
    folder = write_folder(tmp_path / "m")
    (folder / "tokenizer.json").write_text("not json")
    with raises_exactly(mi.TokenizerError, match=r"tokenizer file .*tokenizer\.json is not valid "
                                                 r"JSON"):
        mi.MIModel.from_pretrained(folder, device="cpu")


# ---- from_pretrained arguments -----------------------------------------------------------
@pytest.mark.parametrize("model", [123, 4.5, b"org/name", ["org/name"], "", "   "],
                         ids=["int", "float", "bytes", "list", "empty", "blank"])
def test_model_argument_of_the_wrong_kind(model):
    with raises_exactly(mi.ConfigError, match=r"model must be a Hub repo id .*, got"):
        mi.MIModel.from_pretrained(model, device="cpu")


def test_model_path_with_a_nul_byte():
    with raises_exactly(mi.ConfigError, match=r"model must be a Hub repo id .*'a\\x00b'"):
        mi.MIModel.from_pretrained("a\0b", device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_model_path_that_is_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "model.gguf")
    refused_without_blocking(lambda: mi.MIModel.from_pretrained(tmp_path / "model.gguf"),
                             mi.ConfigError, r"model\.gguf is a FIFO \(named pipe\), not a model")


def test_gguf_name_that_is_a_directory(tmp_path):
    (tmp_path / "weights.gguf").mkdir()
    with raises_exactly(mi.ConfigError, match=r"weights\.gguf is a directory, not a \.gguf file"):
        mi.MIModel.from_pretrained(tmp_path / "weights.gguf", device="cpu")


def test_revision_that_is_not_a_string():
    with raises_exactly(mi.DownloadError, match=r"revision must be a branch, tag or commit hash "
                                                r"string, got 3"):
        mi.MIModel.from_pretrained("org/name", revision=3, device="cpu")


def test_model_path_under_a_user_without_a_home():
    with raises_exactly(mi.ConfigError, match=r"model path '~nosuchuser-tmi/x' cannot be expanded"):
        mi.MIModel.from_pretrained("~nosuchuser-tmi/x", device="cpu")


def test_repo_id_with_too_many_parts():
    with raises_exactly(mi.DownloadError, match=r"'a/b/c/d' is not a Hub repo id"):
        mi.MIModel.from_pretrained("a/b/c/d", device="cpu")


def test_repo_id_of_5000_characters_is_not_echoed_whole():
    with raises_exactly(mi.DownloadError, match=r"\.\.\. \(5000 characters\) is not a Hub repo id"
                       ) as caught:
        mi.MIModel.from_pretrained("x" * 5000, device="cpu")
    assert len(str(caught.value)) < 600
