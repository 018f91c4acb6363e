"""``python -m sagex.llm.llama_main ARGS``: llama-cpp-python's server (same ARGS),
with one guard for CPUs that have AMX.

llama.cpp built for a CPU with AMX repacks quantised weights into AMX tiles; where
the kernel does not grant the process AMX state (common in containers and VMs) the
first forward pass crashes with SIGSEGV. When the loaded llama.cpp reports AMX, the
weights are left as they are (``use_extra_bufts = false``): slower matrix products,
no crash. The portable wheel `make llm-setup` builds has no AMX, so this changes nothing there.
"""

from __future__ import annotations

import sys


def _guard_amx() -> bool:
    from llama_cpp import llama_cpp as lib  # the ctypes module, through which llama_cpp.llama calls

    if b"AMX_INT8 = 1" not in lib.llama_print_system_info():
        return False
    default_params = lib.llama_model_default_params

    def without_repacking() -> lib.llama_model_params:
        params = default_params()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_repacking
    return True


def main() -> None:
    if _guard_amx():
        print("sagex: this llama.cpp build uses AMX; weight repacking is off (it crashes without kernel AMX "
              "support)", file=sys.stderr, flush=True)
    from llama_cpp.server.__main__ import main as serve

    sys.argv[0] = "llama_cpp.server"
    serve()


if __name__ == "__main__":
    main()
