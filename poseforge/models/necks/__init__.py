"""Necks (optional parts between a backbone and its head), registered by config ``type`` in
``poseforge.registry.NECKS``."""
from .cspnext_pafpn import CSPNeXtPAFPN, CSPNeXtPAFPNConfig

__all__ = ["CSPNeXtPAFPN", "CSPNeXtPAFPNConfig"]
