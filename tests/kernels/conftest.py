"""Kernel tests run the Triton kernels on CPU tensors through Triton's interpreter.

``TRITON_INTERPRET=1`` is set around each CPU test, not for the session: ``triton.jit`` reads it
when a kernel is decorated, and :func:`kernels.jit.triton_kernels` keeps one copy of each kernel
module per mode, so vLLM and GPU tests in the same session never see interpreted kernels.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def triton_interpreter(request, monkeypatch):
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def triton_backend():
    """Force the Triton side of every kernel (interpreted on CPU) for the test."""
    pytest.importorskip("triton", reason="triton is not installed")
    from kernels import use_backend

    with use_backend("triton"):
        yield

