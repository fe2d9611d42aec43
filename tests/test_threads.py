"""The intra-op thread count is set for a block and given back, also when the block raises."""

from __future__ import annotations

import pytest
import torch

from sharedflow.threads import intra_op_threads


def test_the_count_is_set_inside_and_given_back_after_an_error() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with intra_op_threads(None):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), intra_op_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
