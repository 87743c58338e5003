"""Choosing the compute dtype: bfloat16 only where the device runs it natively."""

import pytest

from actstore import compute_dtype
from actstore.compute_dtype import cpu_flags, resolve_compute_dtype
from actstore.errors import UserError


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
