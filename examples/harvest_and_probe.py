"""Harvest SmolLM2 residuals over a corpus that ships with scikit-learn, then fit probes
from the store at layers 2, 6 and 10: "this token contains a digit" (read off the token
itself: easy everywhere) and "the NEXT token contains a digit" (a prediction: it has to be
computed, so it should improve with depth).

Corpus: the dataset descriptions scikit-learn installs with itself
(``sklearn/datasets/descr/*.rst``, about 90 kB of English text), present offline wherever
scikit-learn (the probing extra) is installed.
"""

import shutil
from pathlib import Path

import numpy as np
import sklearn
from _common import save, setup

from torch_mi.harvest import ActivationStore, harvest
from torch_mi.interp import train_probe

LAYERS = (2, 6, 10)
model, out, args = setup(__doc__)
corpus = Path(sklearn.__file__).parent / "datasets" / "descr"
target = out / "harvest_descr"
shutil.rmtree(target, ignore_errors=True)
result = harvest(model, corpus, [f"blocks.{i}.hook_resid_post" for i in LAYERS], target,
                 seq_len=128, batch_size=8, max_tokens=128 * 24, progress=True)
print(f"harvested {result.manifest['num_tokens']} tokens of {len(result.manifest['dataset']['files'])}"
      f" files into {len(result.manifest['shards'])} shards")

store = ActivationStore(target, verify=True)
tokens = store.tokens().flatten().tolist()  # packed: every position is a real token
labels = np.array([any(c.isdigit() for c in model.tokenizer.decode([t])) for t in tokens])
print(f"{labels.mean():.1%} of the {len(labels)} tokens contain a digit")
rows = []
next_labels = labels.reshape(store.num_sequences, -1)[:, 1:].reshape(-1)  # token p+1
baseline = max(labels.mean(), 1 - labels.mean())
for layer in LAYERS:
    point = f"blocks.{layer}.hook_resid_post"
    now = train_probe(store.view(point), labels, seed=0)  # the store itself feeds the probe
    acts = store.load(point).reshape(store.num_sequences, -1, model.hidden_size)  # [N, S, D]
    x = acts[:, :-1].reshape(len(next_labels), -1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised: residuals have outlier dims
    ahead = train_probe(x, next_labels, seed=0, max_iter=300)
    rows.append({"layer": layer, "this_token_test": now.test_score,
                 "next_token_test": ahead.test_score})
    print(f"layer {layer:2d}: test accuracy 'this token has a digit' {now.test_score:.3f}, "
          f"'next token has a digit' {ahead.test_score:.3f} (majority {baseline:.3f})")
save(out, "harvest_and_probe", {"corpus": str(corpus), "tokens": len(labels), "probes": rows})
