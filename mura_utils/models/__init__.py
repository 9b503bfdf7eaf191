"""Models: the registry (``registry``: name, label, defaults, CAM layer), the networks and factory over
timm (``networks``), weights files, checkpoints, ensembles, and rebuilding a model from a file (``restore``)."""
