# -*- Python -*-
# lit configuration of Tessera's FileCheck tests.

import os
import sys

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "Tessera"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Unit", "Inputs", "CMakeLists.txt", "lit.cfg.py",
                   "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.tessera_obj_root, "test")

llvm_config.use_default_substitutions()
config.substitutions.append(("%tessera_src", config.tessera_src_root))
config.substitutions.append(("%tessera_obj", config.tessera_obj_root))
config.substitutions.append(("%python", sys.executable))
# Plain paths of the tools, for scripts that run them themselves.
config.substitutions.append(
    ("%opt_binary", os.path.join(config.tessera_tools_dir, "attn-opt")))
config.substitutions.append(
    ("%viz_binary", os.path.join(config.tessera_tools_dir, "attn-viz")))
config.substitutions.append(
    ("%nvrtc_check_binary", os.path.join(config.tessera_tools_dir,
                                         "attn-nvrtc-check")))
config.substitutions.append(
    ("%translate_binary", os.path.join(config.tessera_tools_dir,
                                       "attn-translate")))

# The packaged LLVM has assertions off, so the printer/parser round trip is
# checked explicitly: `lit --param verify_roundtrip=1` runs every attn-opt
# invocation with --verify-roundtrip.
opt_args = []
if lit_config.params.get("verify_roundtrip", "0") == "1":
    opt_args.append("--verify-roundtrip")

tools = [
    ToolSubst("attn-opt", extra_args=opt_args, unresolved="fatal"),
    ToolSubst("attn-viz", unresolved="fatal"),
    ToolSubst("attn-translate", unresolved="fatal"),
    ToolSubst("attn-nvrtc-check", unresolved="fatal"),
    ToolSubst("attn-lsp-server", unresolved="fatal"),
    ToolSubst("attn-calibrate", unresolved="fatal"),
    ToolSubst("attn-import", unresolved="fatal"),
]
llvm_config.add_tool_substitutions(
    tools, [config.tessera_tools_dir, config.llvm_tools_dir])
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# NVRTC compiles the emitted kernels where the CUDA toolkit is installed; the
# tests that need it say `REQUIRES: nvrtc` and are reported unsupported
# elsewhere.
import subprocess
probe = subprocess.run(
    [os.path.join(config.tessera_tools_dir, "attn-nvrtc-check"), "--probe"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
if probe.returncode == 0:
    config.available_features.add("nvrtc")
else:
    lit_config.note("NVRTC is absent; the NVRTC tests are unsupported here: "
                    + probe.stdout.decode(errors="replace").strip())

# Checks that run as an unprivileged user (a read-only cache directory) need
# root, `su`, and a build tree that `nobody` can read.
if os.geteuid() == 0:
    tool = os.path.join(config.tessera_tools_dir, "attn-nvrtc-check")
    probe = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c",
                            "'" + tool + "' --probe"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        config.available_features.add("nobody-can-run-tools")

# The tests of tessera.torch and tessera.transformers say `REQUIRES: torch`
# and run in a Python with torch, numpy and transformers:
# $TESSERA_TORCH_PYTHON, else build/bench-venv (scripts/torch-setup.sh
# installs it; `make check` runs that first). `make check` passes
# `--param require_torch=1`: there a missing torch fails those tests, so CI
# cannot pass by skipping them; a plain lit run reports them unsupported
# (counted as skipped).
torch_python = os.environ.get("TESSERA_TORCH_PYTHON") or os.path.join(
    config.tessera_obj_root, "bench-venv", "bin", "python")
if os.path.exists(torch_python) and subprocess.run(
        [torch_python, "-c", "import torch, numpy, transformers"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
    config.available_features.add("torch")
    config.substitutions.append(("%torch_python", torch_python))
elif lit_config.params.get("require_torch", "0") == "1":
    why = ("no Python with torch, numpy and transformers at " + torch_python +
           " (run scripts/torch-setup.sh or set TESSERA_TORCH_PYTHON)")
    lit_config.warning(why + "; the PyTorch tests fail")
    config.available_features.add("torch")
    # Each test that needs it fails, saying why.
    config.substitutions.append(
        ("%torch_python", "sh -c 'echo \"tessera: " + why + "\" >&2; "
         "exit 1' torch_python"))
else:
    lit_config.note("no Python with torch, numpy and transformers (set "
                    "TESSERA_TORCH_PYTHON or run scripts/torch-setup.sh); the "
                    "PyTorch tests are unsupported here")
