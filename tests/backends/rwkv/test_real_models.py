"""Reference figures of candle-mi-inventory §5.12 on the real RWKV world models, CPU fp32.

These run only when the model is already in the HF cache (no test downloads 3 GB); otherwise
they skip and say which repo to download."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi

PROMPT = "def fibonacci(n):\n    "
PROMPT_IDS = [7334, 21676, 41943, 41, 111, 501, 28352]
V6, V7 = "RWKV/v6-Finch-1B6-HF", "RWKV/RWKV7-Goose-World3-1.5B-HF"


def cached_folder(repo: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True)
    except Exception:
        pytest.skip(f"{repo} is not in the HF cache; download it (huggingface-cli download "
                    f"{repo}) to run the inventory §5.12 figure test")


@pytest.fixture(scope="module", params=[V6, V7])
def real(request):
    model = mi.MIModel.from_pretrained(cached_folder(request.param), device="cpu",
                                       dtype="float32")
    return request.param, model


def _last_logits(model: mi.MIModel) -> torch.Tensor:
    ids = model.encode(PROMPT)
    assert ids[0].tolist() == PROMPT_IDS
    return model.forward(ids, last_logits_only=True).output()[0, -1].float()  # [V]


def test_top_tokens_match_the_reference(real):
    repo, model = real
    logits = _last_logits(model)
    probs = torch.softmax(logits.double(), -1)
    if repo == V6:
        top = logits.topk(5)
        assert top.indices.tolist() == [1942, 98, 5170, 42178, 36]
        assert abs(float(top.values[0]) - 4.7979) <= 1.0
        assert float(probs[1942]) == pytest.approx(0.5975, abs=0.05)
    else:
        top = logits.topk(10)
        assert top.indices.tolist() == [1942, 98, 5170, 36, 42178, 103, 42175, 7560, 121, 7334]
        torch.testing.assert_close(top.values, torch.tensor(
            [7.5585, 5.9269, 5.8649, 4.7785, 4.2776, 4.1880, 3.7979, 3.7510, 3.5133, 3.4919]),
            rtol=0, atol=1e-3)
        assert float(probs[1942]) == pytest.approx(0.5466, abs=1e-3)
    assert model.tokenizer.decode_token(1942) == "if"


def test_shapes_and_cached_generation(real):
    repo, model = real
    if repo == V7:
        assert (model.num_layers, model.hidden_size, model.vocab_size, model.num_heads) == \
            (24, 2048, 65536, 32)
    h, d = model.num_heads, model.config.head_dim
    spec = mi.HookSpec().capture("blocks.0.rwkv.hook_state", "blocks.0.rwkv.hook_decay",
                                 "blocks.0.hook_resid_post")
    cache = model.forward(model.encode(PROMPT), spec)
    assert list(cache["blocks.0.rwkv.hook_state"].shape) == [1, h, d, d]
    assert list(cache["blocks.0.rwkv.hook_decay"].shape) == [1, 7, h, d]
    assert list(cache["blocks.0.hook_resid_post"].shape) == [1, 7, model.hidden_size]
    cached = model.generate(PROMPT, 8)
    assert cached.token_ids == model.generate(PROMPT, 8, recompute=True).token_ids
    assert cached.generated_text.startswith("if")
