"""Once-for-all architecture search of LitePose: the search space, the weight-sharing supernet (registered as
model ``litepose-supernet`` and config type ``litepose-supernet``) and subnet extraction. Training, search and
export live in :mod:`poseforge.train.nas` (``poseforge nas train|search|export``)."""
from .space import SearchSpace, Subnet, SubnetSpace, litepose_macs
from .supernet import (LitePoseSupernet, SupernetConfig, extract_subnet, litepose_supernet_config, subnet_config,
                       subnet_macs)

__all__ = ["SearchSpace", "Subnet", "SubnetSpace", "litepose_macs", "LitePoseSupernet", "SupernetConfig",
           "extract_subnet", "litepose_supernet_config", "subnet_config", "subnet_macs"]
