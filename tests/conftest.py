import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Two cores are shared by the xdist workers: one thread each keeps the suite from oversubscribing.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def fit_eight_clips():
    """Train ``model`` on 8 random clips of ``frames`` frames (4 classes) with AdamW; return the losses."""

    def fit(model, frames: int, lr: float, steps: int = 30) -> list[float]:
        x, y = torch.randn(8, 3, frames, 64, 64), torch.arange(8) % 4
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return fit
