"""Coverage-guided fuzzing of the server's doors and the SDK's state file, with atheris.

``python tests/fuzz/fuzzing.py NAME [libFuzzer options] [CORPUS_DIR ...]`` runs one
harness (:data:`HARNESSES`) under atheris: the modules it tests are instrumented for
coverage, libFuzzer mutates inputs from the corpus directories (new interesting ones are
written to the first), and any exception a harness does not expect is a crash (the input
is saved as ``crash-*``; the exit status is not 0). ``-max_total_time=S`` bounds a run.

Each harness module has ``one_input(data: bytes) -> None``; the MQTT one takes the
protocol version (``--protocol 3.1.1``; 5.0 is one entry in its table once the codec
speaks it). The bounded CI runs are ``test_fuzz.py``; the long runs, with figures,
``power_bench/fuzz.py``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

#: harness name -> (module in this directory, packages whose code is instrumented,
#: the harness's own options)
HARNESSES: dict[str, tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "mqtt": ("fuzz_mqtt", ("pushsdk.protocol",)),
    # The server's codec: 3.1.1 or 5.0, whichever the CONNECT says.
    "mqtt5": ("fuzz_mqtt", ("pushsdk.protocol",), ("--protocol=auto",)),
    "http": ("fuzz_http", ("simulator.server", "h11")),
    "validation": ("fuzz_validation", ("simulator.server",)),
    "state": ("fuzz_state", ("pushsdk.state", "pushsdk.registration", "pushsdk.webpush")),
}
CORPUS = Path(__file__).resolve().parent / "corpus"


def main(argv: list[str]) -> None:
    import atheris

    name = argv[1]
    module_name, packages, *defaults = HARNESSES[name]
    argv = [*argv[:2], *(defaults[0] if defaults else ()), *argv[2:]]
    here = str(Path(__file__).resolve().parent)
    root = str(Path(__file__).resolve().parents[2])
    sys.path[:0] = [here, root]
    options = [arg for arg in argv[2:] if not arg.startswith("--protocol")]
    with atheris.instrument_imports(include=list(packages)):
        module = importlib.import_module(module_name)
    module.configure(argv[2:])
    atheris.Setup([argv[0], *options], module.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
