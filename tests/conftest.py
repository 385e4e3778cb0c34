"""Every test runs on CPU with 8 simulated devices, so sharded code paths are
exercised in-process; single-device code simply uses the first device."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
# The suite's time goes mostly to XLA compiling hundreds of tiny programs, not
# to running them. LLVM's -O0 (HLO optimisation is unchanged) roughly halves
# compile time: the posemb toy study ran in 36 s instead of 48 s on 2 cores.
_flags = [f"{DEVICE_COUNT_FLAG}=8", "--xla_backend_optimization_level=0"]
for _flag in _flags:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
