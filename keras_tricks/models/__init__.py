"""Image classification networks with the bag-of-tricks options built in.

- `resnet_v1`: ResNet v1 18/34/50/101/152 with the ResNet-B/C/D tweaks and zero-γ init
  (He et al. 2019, https://arxiv.org/abs/1812.01187).
- `resnet9`: David Page's fast CIFAR-10 ResNet-9, with CELU, frozen BN scales and
  pool-before-BN (https://myrtle.ai/learn/how-to-train-your-resnet/).
"""

from keras_tricks.models.resnet import resnet_v1
from keras_tricks.models.resnet9 import CELU, resnet9

__all__ = ["CELU", "resnet9", "resnet_v1"]
