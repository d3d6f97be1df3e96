"""Grafana's side of a panel query: variables found and substituted as Grafana does.

Shared by the dashboard tests and the end-to-end test.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import product


def variable_query(variable: dict) -> tuple[str, str]:
    """The selector and the label of a label_values() variable."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"])
    assert match, f"variable {variable['name']}: not a label_values() query"
    return match.group(1), match.group(2)


BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "10m"}


def regex_escape(value: str) -> str:
    """Grafana's escaping of a multi-value variable's values in Prometheus queries."""
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(), value.replace("\\", "\\\\\\\\"))


def lucene_escape(value: str) -> str:
    """Grafana's luceneEscape: numbers as they are, Lucene's special characters escaped."""
    try:
        float(value)
        return value
    except ValueError:
        return re.sub(r'([!*+\-=<>\s&|()\[\]{}^~?:\\/"])', r"\\\1", value)


def formatted(variable: dict, values: list[str], lucene: bool) -> str:
    """A variable's values as Grafana writes them into a query (all values when All is selected)."""
    if not variable["multi"]:
        (value,) = values
        return lucene_escape(value) if lucene else value
    if lucene:
        return "(" + " OR ".join(f'"{lucene_escape(v)}"' for v in values) + ")"
    return "(" + "|".join(regex_escape(v) for v in values) + ")"


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], text)


def selections(prom, board: dict, lucene: bool = False) -> Iterator[dict[str, str]]:
    """Every substitution of the variables, values found as Grafana finds them (label_values
    against Prometheus): All for multi-select variables, each value in turn for the others.
    None while a variable has no values."""
    variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}
    found: dict[str, list[str]] = {}
    for name, variable in variables.items():
        selector, label = variable_query(variable)
        earlier = {n: formatted(variables[n], values, False) for n, values in found.items() if variables[n]["multi"]}
        found[name] = prom.get(f"/api/v1/label/{label}/values", start=time.time() - 3600,
                               **{"match[]": substitute(selector, {**BUILTINS, **earlier})})["data"]
        if not found[name]:
            return
    multi = {n: formatted(variables[n], values, lucene) for n, values in found.items() if variables[n]["multi"]}
    single = {n: [formatted(variables[n], [v], lucene) for v in values]
              for n, values in found.items() if not variables[n]["multi"]}
    for chosen in product(*single.values()):
        yield {**BUILTINS, **multi, **dict(zip(single, chosen))}


def prometheus_targets(board: dict) -> Iterator[tuple[str, dict]]:
    for p in board["panels"]:
        for target in p.get("targets", []):
            if "expr" in target:
                yield f"{board['title']} / {p['title']} / {target['refId']}", target
