"""The heartbeat tests reuse the SDK tests' scripted MQTT broker (``tests/sdk/sdk_harness.py``)."""
import sys
from pathlib import Path

_SDK_TESTS = str(Path(__file__).resolve().parent.parent / "sdk")
if _SDK_TESTS not in sys.path:
    sys.path.append(_SDK_TESTS)
