"""`mura` command line: a thin argparse front over the package (sample, prepare, train, evaluate, compare,
predict, explain, ensemble, export, reproduce). ``parser`` declares the commands and their options,
``commands`` holds one small handler per command (parse nothing, call one function of mura_utils),
``train_options`` generates ``mura train``'s options from TrainConfig's fields."""

from mura_utils.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
