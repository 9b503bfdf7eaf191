"""Inference on a user's files: ``mura predict`` (images, DICOM, study folders) and ONNX export."""
