"""The method names and defaults of ``mura explain``, without torch, so ``mura --help`` stays light
(``cam.CAM_METHODS`` holds the classes; a test keeps the two lists equal)."""

from __future__ import annotations

CAM_METHOD_NAMES = ("gradcam", "gradcam++", "hirescam", "eigencam", "layercam", "xgradcam", "eigengradcam", "scorecam")
DEFAULT_METHODS = ("gradcam", "gradcam++", "hirescam", "eigencam", "layercam")
DEFAULT_ROAD_PERCENTILES = (20, 40, 60, 80)  # percent of pixels kept; the grad-cam package's default is 10, ..., 90
