"""Layers, losses and models with hand-written backpropagation over one flat parameter vector."""

from minigd.nn.gradcheck import check_model_gradients, numerical_gradient, relative_error
from minigd.nn.layers import (
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
)
from minigd.nn.losses import (
    BinaryCrossEntropy,
    Loss,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    get_loss,
)
from minigd.nn.model import Sequential
from minigd.nn.models import (
    linear_regression,
    logistic_regression,
    mlp,
    model_for_data,
    parse_model_spec,
    softmax_regression,
)

load_model = Sequential.load

__all__ = [
    "BatchNorm",
    "BinaryCrossEntropy",
    "Dense",
    "Dropout",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MeanSquaredError",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "check_model_gradients",
    "get_loss",
    "linear_regression",
    "load_model",
    "logistic_regression",
    "mlp",
    "model_for_data",
    "numerical_gradient",
    "parse_model_spec",
    "relative_error",
    "softmax_regression",
]
