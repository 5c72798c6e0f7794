"""``rnnrbm env``: versions, device and threads (paste into bug reports)."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from rnnrbm.cli.common import emit


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("env", parents=[common], help="versions, device and threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import rnnrbm

    result = {
        "rnnrbm": rnnrbm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "default_dtype": str(torch.get_default_dtype()),
    }
    emit(args, result, [f"{k}: {v}" for k, v in result.items()])
    return 0
