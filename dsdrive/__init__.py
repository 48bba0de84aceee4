"""dsdrive: distil large driving teachers into a compact, fast, explainable student planner.

Methods: DSDrive (arXiv 2505.05360), RSD (arXiv 2511.14499), DistillDrive (arXiv 2508.05402),
EvoDriveVLA (arXiv 2603.09465). The data contract is :mod:`dsdrive.data.types`.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes' CPU backend tries to fetch a 4-bit GEMM kernel from the Hugging Face hub through the
# `kernels` package and logs a warning advising to install it when absent. dsdrive never downloads
# kernels (offline by design); bitsandbytes then uses its own CPU path, so the advice is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
