import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Two cores are shared by the xdist workers: one thread each keeps the suite from oversubscribing.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
