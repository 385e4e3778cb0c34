"""What a measurement ran on: the CPU, the cores the process may use, the architecture."""

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the architecture's."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next((x for x in cpuinfo if x.startswith("model name")), "")
    except OSError:
        line = ""
    return line.split(":", 1)[1].strip() if ":" in line else platform.machine()


def hardware() -> dict:
    """The CPU model, the cores this process may use and the architecture: what
    a wall time was measured on."""
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
    }
