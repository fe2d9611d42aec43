"""The frame-rate network before WaveFlow's upsampler: the identity until trained, a fixed number
of parameters, reached by the gradient of the likelihood, and carried through synthesis."""

from __future__ import annotations

import pytest
import torch

from sharedflow.audio.frames import FrameNet
from sharedflow.models import waveflow

SMALL = dict(
    height=None, channels=8, n_layers=3, n_flows=2, n_mels=20, sample_rate=8000, hop_length=64,
    mel={"n_fft": 256, "win_length": 256, "f_min": 0.0, "f_max": 4000.0},
)  # fmt: skip


def test_an_untrained_frame_net_is_the_identity_and_counts_its_weights() -> None:
    net = FrameNet(20, channels=16, n_layers=2)
    mel = torch.randn(3, 20, 11)
    assert torch.equal(net(mel), mel)
    # (20 * 3 + 1) 16 + (16 * 3 + 1) 16 + (16 + 1) 20
    assert sum(p.numel() for p in net.parameters()) == 976 + 784 + 340


def test_a_frame_net_sees_its_receptive_field_and_no_further() -> None:
    net = FrameNet(4, channels=8, n_layers=2, kernel_size=3)
    torch.nn.init.normal_(net.out.weight)
    mel = torch.randn(1, 4, 12, requires_grad=True)
    net(mel)[0, :, 6].sum().backward()
    reached = mel.grad[0].abs().sum(0) > 0
    assert reached.tolist() == [i in range(4, 9) for i in range(12)]  # 2 layers x 2 taps + 1


@pytest.mark.parametrize(("layers", "kernel"), [(0, 3), (2, 4)])
def test_a_frame_net_without_layers_or_with_an_even_kernel_is_refused(layers, kernel) -> None:
    with pytest.raises(ValueError, match="odd kernel"):
        FrameNet(20, n_layers=layers, kernel_size=kernel)


def test_waveflow_with_a_frame_net_trains_it_and_synthesises_through_it() -> None:
    torch.manual_seed(0)
    plain = waveflow(**SMALL)
    model = waveflow(**SMALL, frame_layers=2, frame_channels=16)
    frames = model.flow.context_encoder.frames
    assert sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in plain.parameters()
    ) == sum(p.numel() for p in frames.parameters())
    x = 0.1 * torch.randn(2, 1024)
    model(x).backward()
    assert frames.out.weight.grad.abs().sum() > 0  # the zero output conv learns first
    torch.nn.init.normal_(frames.out.weight, std=0.1)
    model.zero_grad()
    model(x).backward()
    for name, p in frames.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    noise = torch.randn(2, 1024)
    mel = model.mel(x)
    y = model.synthesize(mel, 0.6, 1024, noise)
    torch.nn.init.zeros_(frames.out.weight)
    assert not torch.allclose(y, model.synthesize(mel, 0.6, 1024, noise))
