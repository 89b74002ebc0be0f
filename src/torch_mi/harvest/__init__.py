"""Dataset-scale activation harvests (SPEC §13): capture hook points and dictionary features
over a corpus into checksummed safetensors shards, read them back with ActivationStore.

Layout of an output folder:

* ``shard-000000.safetensors`` ...: a fixed number of sequences each (sequence i lives in
  shard ``i // seqs_per_shard``): ``tokens`` [n,S] int32, ``seq_index`` [n],
  ``attention_mask`` [n,S] (pad mode), ``act.<point>`` [n,S,...] / [n,...] / [n,P,...],
  ``feat.<dict>.indptr|indices|values`` (CSR over the kept positions) and
  ``stats.<dict>.*`` (mergeable partial feature statistics).
* ``manifest.json``: model (source, weight hash), tokenizer, dataset fingerprint, plan
  (points, shapes, dtype, positions, packing rule, sizes), shard list with sha256.
* ``features.json`` (with dictionaries) and ``cards/*.html`` on request.
"""

from .api import HarvestResult, build_plan, harvest
from .errors import (
    DatasetError,
    EngineUnavailableError,
    HarvestError,
    ManifestMismatchError,
    ShardCorruptError,
)
from .features_report import read_feature_stats, write_feature_card
from .inspect import inspect_harvest
from .plan import HarvestPlan, Positions
from .shard import ShardRecord, produce_shard
from .sources import Dataset
from .store import ActivationStore, StoreView

__all__ = [
    "ActivationStore",
    "Dataset",
    "DatasetError",
    "EngineUnavailableError",
    "HarvestError",
    "HarvestPlan",
    "HarvestResult",
    "ManifestMismatchError",
    "Positions",
    "ShardCorruptError",
    "ShardRecord",
    "StoreView",
    "build_plan",
    "harvest",
    "inspect_harvest",
    "produce_shard",
    "read_feature_stats",
    "write_feature_card",
]
