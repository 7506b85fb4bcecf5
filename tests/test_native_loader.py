"""mirrorflow._core.native.load_library: the compiled kernels load only when built, current
(their ABI number matches the bindings') and not turned off with MIRRORFLOW_NATIVE=0."""

import ctypes

from mirrorflow._core.native import load_library

MOD = "mirrorflow.experiments._nnkernels"


def test_current_build_loads():
    from mirrorflow.experiments import _fused

    lib = load_library(MOD, "nn_abi", _fused._ABI)
    assert isinstance(lib, ctypes.CDLL)
    assert lib.nn_abi() == _fused._ABI


def test_stale_build_missing_symbol_and_missing_module_give_none():
    from mirrorflow.experiments import _fused

    assert load_library(MOD, "nn_abi", _fused._ABI + 1) is None  # built by older code
    assert load_library(MOD, "no_such_abi_symbol", 1) is None
    assert load_library("mirrorflow.experiments.no_such_ext", "nn_abi", 1) is None
    assert load_library("mirrorflow.experiments.nn", "nn_abi", 1) is None  # a .py, not a library


def test_disabled_by_environment(monkeypatch):
    from mirrorflow.experiments import _fused

    monkeypatch.setenv("MIRRORFLOW_NATIVE", "0")
    assert load_library(MOD, "nn_abi", _fused._ABI) is None
    monkeypatch.setenv("MIRRORFLOW_NATIVE", "1")
    assert load_library(MOD, "nn_abi", _fused._ABI) is not None
