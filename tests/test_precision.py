"""``--dtype auto`` and ``trainer.precision=auto``: bf16 only where it is native and fast."""

from __future__ import annotations

import pytest
import torch

from sharedflow.precision import ROW_GEMM, Capabilities, autocast, choose

AVX2 = Capabilities("AVX2", frozenset({"avx2", "fma"}))
AVX512 = Capabilities("AVX512", frozenset({"avx2", "avx512f", "avx512bw"}))
SAPPHIRE_RAPIDS = Capabilities("AVX512", frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
COOPER_LAKE = Capabilities("AVX512", frozenset({"avx512f", "avx512_bf16"}))
SLOW_BF16 = Capabilities("AVX512", frozenset({"avx512f", "avx512_bf16"}), None, 0.55)
FAST_BF16 = Capabilities("AVX512", frozenset({"avx512f", "avx512_bf16"}), None, 4.0)
V100 = Capabilities("AVX2", frozenset(), (7, 0))
A100 = Capabilities("AVX2", frozenset(), (8, 0))


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [(AVX2, "fp32"), (AVX512, "fp32"), (SAPPHIRE_RAPIDS, "bf16"), (COOPER_LAKE, "bf16"),
     (SLOW_BF16, "fp32"), (FAST_BF16, "bf16"), (V100, "fp32"), (A100, "bf16")],
)  # fmt: skip
def test_auto_picks_bf16_only_where_it_is_native(
    capabilities: Capabilities, expected: str
) -> None:
    assert choose("auto", capabilities) == (expected, None)


def test_explicit_half_precision_without_hardware_support_warns() -> None:
    dtype, warning = choose("bf16", AVX2)
    assert dtype == "bf16" and "emulated" in warning and "native bf16: none" in warning
    assert choose("bf16", SAPPHIRE_RAPIDS) == ("bf16", None)
    assert choose("bf16", A100) == ("bf16", None)
    assert "emulated" in choose("fp16", AVX512)[1]
    assert choose("fp16", V100) == ("fp16", None)
    assert choose("fp32", AVX2) == ("fp32", None)
    dtype, warning = choose("bf16", SLOW_BF16)  # the flag, but measured slower than fp32
    assert dtype == "bf16" and "measured slower" in warning and "0.55x fp32" in warning
    assert choose("bf16", FAST_BF16) == ("bf16", None)
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, fp16"):
        choose("fp8", AVX2)


def test_this_machine_is_described() -> None:
    detected = Capabilities.detect("cpu")
    assert detected.cpu_capability in detected.describe()
    assert choose("auto", detected)[0] == ("bf16" if detected.fast_bf16() else "fp32")
    assert (detected.bf16_speedup is not None) == (
        detected.native_bf16() and detected.cuda_capability is None
    )


def test_autocast_runs_products_in_the_chosen_precision_and_fp32_changes_nothing() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16


@pytest.mark.parametrize("command", ["sample", "evaluate", "synthesize"])
def test_auto_is_the_default_precision_of_every_inference_command(command: str) -> None:
    from sharedflow.cli import _parser

    extra = {"sample": ["--out", "x.png"], "evaluate": [], "synthesize": ["in.wav", "--out", "o"]}
    args = _parser().parse_args([command, "run", *extra[command]])
    assert args.dtype == "auto"


def test_the_probe_draws_nothing_from_the_global_rng_and_runs_only_when_asked() -> None:
    from sharedflow.precision import bf16_gemm_speedup

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert bf16_gemm_speedup.__wrapped__(torch.get_num_threads()) > 0
    assert bf16_gemm_speedup.__wrapped__(torch.get_num_threads(), (1, 48, 32)) > 0
    assert torch.equal(torch.rand(3), expected)  # a seeded run does not depend on the machine
    assert Capabilities.detect("cpu", measure=False).bf16_speedup is None


def test_the_probe_is_the_models_own_row_product_and_is_named() -> None:
    from sharedflow.models import waveflow, waveglow

    assert waveflow(16, 64).generation_gemm(22272) == ROW_GEMM
    one_column = waveflow(None, 16, n_layers=8, n_flows=4, dilation_cycle=8, n_mels=40)
    assert one_column.generation_gemm(8000) == (1, 48, 32)  # 3 taps x 16 channels -> 2 x 16
    assert waveglow(n_flows=2, n_group=8, n_early_every=4).generation_gemm(22050) is None
    measured = Capabilities("AVX512", frozenset({"avx512_bf16"}), None, 0.7, (1, 48, 32))
    assert "(1, 48) @ (48, 32) at 0.70x fp32" in measured.describe()
    assert choose("auto", measured) == ("fp32", None)
    assert Capabilities.detect("cpu", measure=False, gemm=(1, 48, 32)).gemm == (1, 48, 32)
    assert Capabilities.detect("cpu", measure=False).gemm == ROW_GEMM
