"""dsdrive: distil large driving teachers into a compact, fast, explainable student planner.

Methods: DSDrive (arXiv 2505.05360), RSD (arXiv 2511.14499), DistillDrive (arXiv 2508.05402),
EvoDriveVLA (arXiv 2603.09465). The data contract is :mod:`dsdrive.data.types`.
"""

__version__ = "0.1.0"
