"""What the tests share: one of each helper, exposed as fixtures by ``tests/conftest.py``.

- :mod:`support.ports`: :func:`~support.ports.free_port`, a loopback TCP port free a moment ago;
- :mod:`support.mosquitto`: :func:`~support.mosquitto.run_mosquitto`, a real Mosquitto on a free
  loopback port (the ``mosquitto`` fixture);
- :mod:`support.server`: :func:`~support.server.start_server`, ``python -m simulator.server`` as
  a child process with the tests' defaults (the ``server_process`` fixture);
- :mod:`support.http`: :func:`~support.http.http_request` and the few calls every HTTP test makes.

The server child, the free port and the HTTP calls are implemented once, in
:mod:`simulator.server_child`, which the benchmarks use too; these modules give the tests'
defaults.

``tests/`` is on ``sys.path`` while the suite runs (``tests/conftest.py`` has no package around
it), so the tests and their harness modules import this package as ``support``. Nothing in the
project imports it (``power_bench`` imports nothing from ``tests``; tests/test_house.py checks).
"""
