"""Choosing the compute dtype: bfloat16 only where the device runs it natively."""

import pytest
import torch

from actstore.models import compute_dtype
from actstore.models.compute_dtype import cpu_flags, resolve_compute_dtype
from common import UserError


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"),
    ({"avx2", "avx512f", "avx512bw"}, "float32"),  # AVX-512 without BF16: bfloat16 only emulated
    (set(), "float32"),
])
def test_auto_on_cpu_follows_the_bfloat16_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(compute_dtype, "cpu_flags", lambda: frozenset(flags))
    assert resolve_compute_dtype("auto", "cpu") == expected


def test_explicit_choice_wins_and_unknown_is_refused(monkeypatch):
    monkeypatch.setattr(compute_dtype, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert resolve_compute_dtype("float32", "cpu") == "float32"
    assert resolve_compute_dtype("float16", "cpu") == "float16"
    with pytest.raises(UserError, match="unknown --compute-dtype 'half'"):
        resolve_compute_dtype("half", "cpu")


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_loglik_head_runs_in_float32_for_a_bfloat16_model():
    """Logits of tens of nats lose ~0.1 nat each in bfloat16; the log-likelihood head keeps float32."""
    from actstore.engine.forward import token_logprobs
    from actstore.engine.logits import Float32Head

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 1000, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        lm_head.weight.mul_(40.0)  # logits of a few tens, as a trained model's
    hidden = torch.randn(20, 64).to(torch.bfloat16)
    targets = torch.randint(0, 1000, (20,))
    exact = torch.log_softmax(hidden.double() @ lm_head.weight.double().T, dim=1)[torch.arange(20), targets]
    got = token_logprobs(hidden, targets, Float32Head(lm_head))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-3)
    in_bfloat16 = torch.log_softmax(lm_head(hidden).float(), dim=1)[torch.arange(20), targets].double()
    assert (in_bfloat16 - exact).abs().max() > 0.01  # what the float32 head avoids


def test_loglik_head_uses_bfloat16_units_only_for_exact_bfloat16_operands(monkeypatch):
    """bfloat16 weights and hidden states: float32 logits from the bfloat16 units, within float32
    rounding of float64; anything else (a float32 model) takes the plain float32 product, bitwise."""
    import actstore.engine.logits as logits_module

    entered = []
    real = logits_module._bfloat16_arithmetic
    monkeypatch.setattr(logits_module, "_bfloat16_arithmetic", lambda: entered.append(1) or real())
    torch.manual_seed(0)
    lm_head = torch.nn.Linear(576, 4000, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        lm_head.weight.mul_(40.0)
    hidden = torch.randn(64, 576).to(torch.bfloat16)
    exact = hidden.double() @ lm_head.weight.double().T
    got = logits_module.Float32Head(lm_head)(hidden)
    assert entered and got.dtype == torch.float32
    assert torch.backends.mkldnn.matmul.fp32_precision != "bf16"  # restored
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-4)

    entered.clear()
    float_head = torch.nn.Linear(576, 4000, bias=True)
    float_hidden = torch.randn(64, 576)
    got = logits_module.Float32Head(float_head)(float_hidden)
    assert not entered
    assert torch.equal(got, torch.nn.functional.linear(float_hidden, float_head.weight) + float_head.bias)
    bfloat16_rows = float_hidden.bfloat16()  # bfloat16 hidden states, float32 weights: not exact either
    logits_module.Float32Head(float_head)(bfloat16_rows)
    assert not entered


def test_loglik_head_takes_the_plain_product_where_torch_has_no_bfloat16_setting(monkeypatch):
    """torch before 2.9 (no mkldnn.matmul.fp32_precision) or without oneDNN: bfloat16 operands take the
    plain float32 product, bitwise, instead of failing on the missing setting."""
    import actstore.engine.logits as logits_module

    entered = []
    monkeypatch.setattr(logits_module, "_bfloat16_arithmetic", lambda: entered.append(1))
    monkeypatch.setattr(torch.backends.mkldnn, "matmul", object(), raising=False)
    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 300, bias=False).to(torch.bfloat16)
    hidden = torch.randn(8, 64).to(torch.bfloat16)
    got = logits_module.Float32Head(lm_head)(hidden)
    assert not entered
    assert torch.equal(got, torch.nn.functional.linear(hidden.float(), lm_head.weight.float()))


def test_loglik_head_keeps_no_float32_copy_and_chunks_the_vocabulary(monkeypatch):
    """The head holds the model's own weight only (no float32 copy of it); its float32 logits come from chunks
    of the vocabulary, each taken to float32 on its own, and equal the whole product whatever the chunk size."""
    import actstore.engine.logits as logits_module

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 1000, bias=True).to(torch.bfloat16)
    head = logits_module.Float32Head(lm_head)
    own = {lm_head.weight.data_ptr(), lm_head.bias.data_ptr()}
    assert {tensor.data_ptr() for tensor in head.state_dict().values()} == own
    assert not [tensor for tensor in vars(head).values() if isinstance(tensor, torch.Tensor)]
    hidden = torch.randn(12, 64).to(torch.bfloat16)
    whole = head(hidden)
    widest = []
    real_product = logits_module._float32_product
    monkeypatch.setattr(logits_module, "_float32_product",
                        lambda rows, weight, exact: widest.append(len(weight)) or real_product(rows, weight, exact))
    monkeypatch.setattr(logits_module, "HEAD_CHUNK_BYTES", 64 * 4 * 300)  # 300 vocabulary rows a chunk
    chunked = head(hidden)
    assert widest == [300, 300, 300, 100]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    exact = (hidden.double() @ lm_head.weight.double().T + lm_head.bias.double()).float()
    torch.testing.assert_close(chunked, exact, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("failure, falls_back", [
    (NotImplementedError("aten::mm.dtype has no kernel for this backend"), True),
    (TypeError("mm() got an unexpected keyword argument 'out_dtype'"), True),
    (TypeError("mm(): argument 'input' must be Tensor"), False),
    (torch.OutOfMemoryError("CUDA out of memory"), False),
])
def test_the_float32_output_gemm_falls_back_only_where_torch_or_its_backend_lacks_it(monkeypatch, failure, falls_back):
    """The CUDA head's bfloat16 GEMM with float32 output: None (the float32 path then) only where torch.mm takes no
    out_dtype or the backend has no kernel for it; any other error, an out-of-memory above all, is raised."""
    import actstore.engine.logits as logits_module

    def failing(*args, **kwargs):
        raise failure

    monkeypatch.setattr(logits_module.torch, "mm", failing)
    rows, weight = torch.randn(3, 8), torch.randn(5, 8)
    if falls_back:
        assert logits_module.float32_output_gemm(rows, weight) is None
    else:
        with pytest.raises(type(failure)):
            logits_module.float32_output_gemm(rows, weight)


@pytest.mark.gpu
def test_loglik_head_on_cuda_takes_the_float32_output_gemm_and_equals_float64(monkeypatch):
    """On a GPU the head's bfloat16 operands go through torch.mm with float32 output (no float32 copy of the
    weight); its log-probabilities equal the float64 product's. Skipped where no CUDA GPU is at hand."""
    from actstore.engine import logits
    from actstore.engine.forward import token_logprobs
    from actstore.engine.logits import Float32Head

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 1000, bias=False).to(torch.bfloat16).cuda()
    with torch.no_grad():
        lm_head.weight.mul_(40.0)
    hidden = torch.randn(20, 64, device="cuda").to(torch.bfloat16)
    targets = torch.randint(0, 1000, (20,), device="cuda")
    exact = torch.log_softmax(hidden.double() @ lm_head.weight.double().T, dim=1)[torch.arange(20), targets]
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(logits.torch, "mm", lambda *a, **k: calls.append(k.get("out_dtype")) or real_mm(*a, **k))
    got = token_logprobs(hidden, targets, Float32Head(lm_head))
    assert calls and set(calls) == {torch.float32}  # the float32-output GEMM ran, nothing fell back
    torch.testing.assert_close(got.cpu(), exact.cpu(), rtol=0, atol=1e-3)
