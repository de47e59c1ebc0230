"""Load a module of ``@triton.jit`` kernels for the Triton mode in force at call time.

    tk = triton_kernels("alibi_attention_triton")    # kernels/alibi_attention_triton.py
    tk.attention_fwd[grid](...)

Kernel modules load on first use, so processes that only run the PyTorch references never import
triton. ``triton.jit`` decides at decoration time whether a kernel is compiled for the GPU or run
by the interpreter (``TRITON_INTERPRET=1``, CPU tensors); one private copy of the module per mode
means a copy decorated in the other mode is never reused. Triton's own ``@jit`` standard library
(``tl.zeros``, ``tl.max``) is decorated when triton is imported, so interpreting also needs the
variable set before that import: tests run interpreted kernels in a child process
(``tests/kernels/conftest.py``).
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).parent
_loaded: dict[tuple[str, bool], ModuleType] = {}
_lock = threading.Lock()


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1`` (Triton kernels run on CPU tensors, slowly)."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


def triton_kernels(name: str) -> ModuleType:
    """``kernels/<name>.py`` with its kernels decorated for the current mode (cached per mode)."""
    mode = interpreting()
    key = (name, mode)
    with _lock:
        if key not in _loaded:
            mod_name = f"kernels.{name}{'__interpret' if mode else ''}"
            spec = importlib.util.spec_from_file_location(mod_name, _HERE / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module  # inspect.getsource (used by triton.jit) looks here
            spec.loader.exec_module(module)
            _loaded[key] = module
        return _loaded[key]
