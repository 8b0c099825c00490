"""An architecture as a file describes it: the JSON that ``Sequential.config()`` writes, read
back into layers with every field checked (a hand-edited or hostile file gets a sentence naming
the field), and the most bytes each saved array of it may declare, so a file is judged before
anything it declares is allocated (``Sequential.load``, checkpoints).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from minigd.nn.layers import LAYERS, Layer
from minigd.nn.losses import LOSSES

FORMAT = "minigd-model-1"


def parse_architecture(config: Any, source: Any) -> tuple[list[Layer], str, int, Any]:
    """(layers, loss, seed, dtype) of an architecture, each field checked; building the layers
    allocates nothing (parameters come with the Sequential)."""

    def bad(field: str, expected: str, found: Any) -> ValueError:
        return ValueError(
            f"{source}: the architecture's {field} must be {expected}; found {found!r}."
        )

    if not isinstance(config, dict):
        raise bad("top level", "a JSON object", type(config).__name__)
    if config.get("format") != FORMAT:
        raise bad("format", repr(FORMAT), config.get("format"))
    specs = config.get("layers")
    if not isinstance(specs, list) or not specs:
        raise bad("'layers'", "a non-empty list", specs)
    layers = [_parse_layer(spec, i, source) for i, spec in enumerate(specs)]
    if config.get("loss") not in LOSSES:
        raise bad(
            "'loss'",
            f"one of {sorted(LOSSES)} (a loss of your own registers when the module that "
            "defines it is imported)",
            config.get("loss"),
        )
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise bad("'seed'", "an integer >= 0", seed)
    if config.get("dtype") not in ("float32", "float64"):
        raise bad("'dtype'", "'float32' or 'float64'", config.get("dtype"))
    return layers, config["loss"], seed, config["dtype"]


def _parse_layer(spec: Any, i: int, source: Any) -> Layer:
    where = f"{source}: layers[{i}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        found = spec.get("type") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{where} must be an object with a 'type' string; found {found!r}.")
    if spec["type"] not in LAYERS:
        raise ValueError(
            f"{where}: {spec['type']!r} is not a registered layer (those are {sorted(LAYERS)}); "
            "if it is a layer of your own, import the module that defines it before loading."
        )
    kind = LAYERS[spec["type"]]
    arguments = {k: v for k, v in spec.items() if k != "type"}
    accepted = set(inspect.signature(kind).parameters)
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise ValueError(
            f"{where} ({spec['type']}) has unknown fields {unknown}; it takes {sorted(accepted)}."
        )
    try:
        return kind(**arguments)  # config() keys are constructor arguments
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({spec['type']}): {exc}") from None


def state_sizes(layers: list[Layer]) -> dict[str, int]:
    """The most bytes each saved array of these layers may take (float64 at the most)."""
    sizes = {}
    for i, layer in enumerate(layers):
        for name, shape in layer.param_shapes():
            sizes[f"{i}.{name}"] = int(np.prod(shape)) * 8
        for name, shape in layer.buffer_shapes():
            sizes[f"{i}.{name}"] = int(np.prod(shape)) * 8
    return sizes


def saved_sizes(config: Any, source: Any) -> tuple[dict[str, int], int]:
    """(the most bytes each saved array of this architecture may take, its parameter count),
    from the architecture alone: what a file claiming to hold this model may declare."""
    layers = parse_architecture(config, source)[0]
    n_params = sum(int(np.prod(shape)) for la in layers for _, shape in la.param_shapes())
    return state_sizes(layers), n_params
