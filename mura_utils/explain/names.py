"""The CAM methods of ``mura explain`` and ``mura predict``, without torch, so ``mura --help`` stays light:
each CLI name with the name of its class in the grad-cam package (``explain.cam`` looks the classes up) and
its display label. Adding a method is one entry in each table here."""

from __future__ import annotations

# CLI name -> pytorch_grad_cam class. EigenCAM ignores the target (first principal component of the
# layer's activations, sign as SVD gives it); ScoreCAM runs the model once per channel (slow).
CAM_METHOD_CLASSES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
}
# CLI name -> how tables and figures name it
CAM_METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGrad-CAM",
    "eigengradcam": "EigenGrad-CAM",
    "scorecam": "Score-CAM",
}
CAM_METHOD_NAMES = tuple(CAM_METHOD_CLASSES)
DEFAULT_CAM_METHOD = "gradcam"
DEFAULT_METHODS = ("gradcam", "gradcam++", "hirescam", "eigencam", "layercam")
DEFAULT_ROAD_PERCENTILES = (20, 40, 60, 80)  # percent of pixels kept; the grad-cam package's default is 10, ..., 90
