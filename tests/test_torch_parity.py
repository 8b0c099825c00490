"""Step-by-step parity with PyTorch 2.13 (CPU) in float64: layers, losses, 100 optimizer steps."""

import numpy as np
import pytest

from minigd import MiniBatches
from minigd.nn import BatchNorm, Dense, Dropout, LeakyReLU, ReLU, Sequential, Sigmoid, Tanh, mlp
from minigd.optim import SGD, Adam, AdamW, RMSprop

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL = 1e-6


def to_torch(model: Sequential):
    """An equivalent torch.nn.Sequential holding a copy of the model's weights."""
    modules = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            modules.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias))
        elif isinstance(layer, BatchNorm):
            modules.append(
                nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            )
        elif isinstance(layer, LeakyReLU):
            modules.append(nn.LeakyReLU(layer.negative_slope))
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.p))
        else:
            modules.append({ReLU: nn.ReLU, Tanh: nn.Tanh, Sigmoid: nn.Sigmoid}[type(layer)]())
    net = nn.Sequential(*modules).double()
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(torch.from_numpy(ours[name]))
    return net


def torch_loss(name):
    return {
        "mse": nn.MSELoss(),
        "bce": nn.BCEWithLogitsLoss(),
        "softmax_cross_entropy": nn.CrossEntropyLoss(),
    }[name]


def in_torch_order(model):
    """The model's parameters flattened as torch flattens its own (Dense weights are stored
    transposed in minigd's flat vector)."""
    return np.concatenate([view.ravel() for _, view in model.named_parameters()])


def flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy()


# -- layers and losses ----------------------------------------------------------------------
LAYER_CASES = {
    "dense": lambda: [Dense(6, 4)],
    "relu": lambda: [Dense(6, 4), ReLU()],
    "leaky_relu": lambda: [Dense(6, 4), LeakyReLU(0.2)],
    "tanh": lambda: [Dense(6, 4), Tanh()],
    "sigmoid": lambda: [Dense(6, 4), Sigmoid()],
    "batchnorm": lambda: [Dense(6, 4), BatchNorm(4, momentum=0.3)],
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
@pytest.mark.parametrize("training", [True, False])
def test_layer_forward_and_backward_match_torch(case, training):
    model = Sequential(LAYER_CASES[case](), "mse", seed=3, dtype=np.float64)
    net = to_torch(model).train(training)
    rng = np.random.default_rng(0)
    if case == "batchnorm" and not training:  # give the running statistics non-trivial values
        for _ in range(3):
            batch = rng.normal(2.0, 3.0, size=(8, 6))
            model.forward(batch, True)
            net.train()(torch.from_numpy(batch))
        net.train(training)
    X = rng.normal(size=(8, 6))
    dy = rng.normal(size=(8, 4))
    out = model.forward(X, training).copy()
    x_t = torch.from_numpy(X).requires_grad_(True)
    out_t = net(x_t)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    out_t.backward(torch.from_numpy(dy))
    dx = model.layers[0]._x  # the input the first layer saw
    assert dx is X
    grads = model.grads.copy()
    # backward through every layer, then through the first Dense to its input
    d = dy.copy()
    for layer in reversed(model.layers):
        d = layer.backward(d, need_dx=True)
    np.testing.assert_allclose(d, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, ours), (name_t, theirs) in zip(
        model.named_gradients(), net.named_parameters(), strict=True
    ):
        assert name == name_t
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert grads.shape == model.grads.shape
    if case == "batchnorm":
        bn_t, bn = net[1], model.layers[1]
        np.testing.assert_allclose(bn.running_mean, bn_t.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, bn_t.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-if-available", "numpy"])
@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_cross_entropy"])
def test_loss_value_and_gradient_match_torch(loss, compiled):
    rng = np.random.default_rng(1)
    z = rng.normal(scale=4.0, size=(9, 3))
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, 3, 9)
        y_t = torch.from_numpy(y)
    elif loss == "bce":
        y = rng.integers(0, 2, (9, 3)).astype(np.float64)
        y_t = torch.from_numpy(y)
    else:
        y = rng.normal(size=(9, 3))
        y_t = torch.from_numpy(y)
    model = Sequential([Dense(2, 3)], loss, dtype=np.float64)
    if not compiled:
        model.loss._kernels = None  # the NumPy expressions
    value, dz = model.loss(z, y)
    z_t = torch.from_numpy(z).requires_grad_(True)
    expected = torch_loss(loss)(z_t, y_t)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(dz, z_t.grad.numpy(), rtol=1e-10, atol=1e-14)


# -- optimizers: 100 steps on an MLP, with and without BatchNorm ----------------------------
OPTIMIZER_CASES = {
    "sgd": (lambda: SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (
        lambda: SGD(0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "sgd_dampening": (
        lambda: SGD(0.05, momentum=0.9, dampening=0.3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
    ),
    "sgd_nesterov": (
        lambda: SGD(0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "sgd_weight_decay": (
        lambda: SGD(0.05, momentum=0.5, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=1e-2),
    ),
    "rmsprop": (lambda: RMSprop(1e-3), lambda p: torch.optim.RMSprop(p, lr=1e-3)),
    "rmsprop_centered": (
        lambda: RMSprop(1e-3, centered=True),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True),
    ),
    "rmsprop_momentum": (
        lambda: RMSprop(1e-3, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, weight_decay=1e-3),
    ),
    "rmsprop_all": (
        lambda: RMSprop(1e-3, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3),
        lambda p: torch.optim.RMSprop(
            p, lr=1e-3, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3
        ),
    ),
    "adam": (lambda: Adam(1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
    "adam_amsgrad": (
        lambda: Adam(1e-3, amsgrad=True),
        lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
    ),
    "adam_weight_decay": (
        lambda: Adam(1e-3, betas=(0.8, 0.99), weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.8, 0.99), weight_decay=1e-2),
    ),
    "adamw": (lambda: AdamW(1e-3), lambda p: torch.optim.AdamW(p, lr=1e-3)),
    "adamw_amsgrad": (
        lambda: AdamW(2e-3, weight_decay=0.1, amsgrad=True),
        lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.1, amsgrad=True),
    ),
}


@pytest.mark.parametrize("fused", [False, None], ids=["numpy", "compiled-if-available"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["mlp", "mlp_bn"])
@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_optimizer_matches_torch_for_100_steps(case, batchnorm, fused, digits):
    train, _ = digits
    X, y = train.X.astype(np.float64), train.y
    make_ours, make_theirs = OPTIMIZER_CASES[case]
    model = mlp(64, [32, 16], 10, batchnorm=batchnorm, seed=7, dtype=np.float64)
    net = to_torch(model).train()
    ours, theirs = make_ours(), make_theirs(net.parameters())
    if fused is False:
        ours.fused, ours._kernels = False, None  # the NumPy expressions
    criterion = nn.CrossEntropyLoss()
    batches = MiniBatches(X, y, batch_size=32, seed=1, last_batch="merge")
    steps = 0
    for epoch in range(10):
        for xb, yb in batches.epoch(epoch):
            loss = model.loss_and_grad(xb, yb)
            ours.step(model.params, model.grads)
            theirs.zero_grad(set_to_none=True)
            loss_t = criterion(net(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss_t.backward()
            theirs.step()
            assert loss == pytest.approx(loss_t.item(), rel=RTOL)
            np.testing.assert_allclose(
                in_torch_order(model), flat(net), rtol=RTOL, atol=1e-9, err_msg=f"step {steps + 1}"
            )
            steps += 1
            if steps == 100:
                break
        if steps == 100:
            break
    assert steps == 100
    if batchnorm:
        np.testing.assert_allclose(
            model.layers[1].running_var, net[1].running_var.numpy(), rtol=RTOL
        )
