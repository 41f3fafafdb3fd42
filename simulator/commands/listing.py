"""``pushsim strategies | models | scenarios``: list the built-in names, one per line."""
from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def _print(rows) -> int:
    rows = list(rows)
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}".rstrip())
    return 0


def run_models(args) -> int:
    from simulator.radio import list_models

    return _print(list_models())


def run_scenarios(args) -> int:
    from simulator.scenario import list_builtin

    return _print(list_builtin())


def run_strategies(args) -> int:
    from simulator.strategies import list_strategies

    return _print(list_strategies())
