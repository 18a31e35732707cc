"""The GPU vendors' names, apart from ``gpu_inventory``: planning names the vendor of a plan without GPUs
too, and importing the inventory for two strings would cost the CLI's path to its first spawn a few ms."""

from __future__ import annotations

__all__ = ["AMD", "NVIDIA"]

NVIDIA = "nvidia"  #: replicas get CUDA_VISIBLE_DEVICES; GPUs are joined by NVLink
AMD = "amd"  #: replicas get HIP_VISIBLE_DEVICES (ROCm); GPUs are joined by XGMI
