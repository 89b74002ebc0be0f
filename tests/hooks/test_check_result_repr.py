"""check_result names the intervention only when it reports an error: an accepted result
must not format the intervention (a dataclass repr prints its tensors; attribution's
replacement model paid ~10% of its time for it)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from torch_mi.errors import InterventionError
from torch_mi.hooks.interventions import Intervention, check_result
from torch_mi.hooks.points import as_point


@dataclass(frozen=True, eq=False)
class Counted(Intervention):
    calls: list

    def apply(self, tensor, point, call):
        return tensor + 1

    def __repr__(self) -> str:
        self.calls.append(1)
        return "Counted()"


def test_accepted_result_is_not_formatted():
    calls: list = []
    before = torch.zeros(2, 3)
    point = as_point("blocks.0.hook_resid_post")
    after = check_result(Counted(calls), point, before, before + 1)
    assert torch.equal(after, torch.ones(2, 3)) and calls == []


@pytest.mark.parametrize(("result", "match"), [
    (torch.zeros(3, 2), "returned shape"), (torch.zeros(2, 3, dtype=torch.float64), "dtype"),
    ("x", "returned str"),
])
def test_rejected_result_names_the_intervention(result, match):
    calls: list = []
    with pytest.raises(InterventionError, match=match) as info:
        check_result(Counted(calls), as_point("blocks.0.hook_resid_post"), torch.zeros(2, 3),
                     result)
    assert "Counted()" in str(info.value) and calls == [1]
