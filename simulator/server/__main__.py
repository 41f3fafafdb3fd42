"""``python -m simulator.server``: the same as ``pushsim server``."""
import argparse
import sys

from .command import add_arguments, run

parser = argparse.ArgumentParser(prog="pushsim server",
                                 description="Run the reference push server.")
add_arguments(parser)
sys.exit(run(parser.parse_args()))
