"""The ``pushsim`` console script: the simulator's command line when its dependencies are
installed (``pip install 'pushsim[sim]'``), else one line saying so."""
from __future__ import annotations

import importlib.util
import sys

#: Imported by pushsim's commands and installed by the ``[sim]`` extra.
SIM_MODULES = ("matplotlib", "psutil", "tqdm")


def main() -> int:
    missing = [name for name in SIM_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(f"pushsim: the simulator needs {', '.join(missing)}: install it with "
              "pip install 'pushsim[sim]' (the core install is the SDK alone)",
              file=sys.stderr)
        return 2
    from simulator.cli import main as simulator_main

    return simulator_main()


if __name__ == "__main__":
    sys.exit(main())
