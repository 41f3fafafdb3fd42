"""``python -m pushsdk``: same as the ``pushsdk`` command."""
from .cli import main

raise SystemExit(main())
