"""torch.compile in prediction: the modes a user may name, the GPU default, and eager when compiling fails."""

import pytest
import torch

from carseg.errors import CarsegError
from carseg.inference.predictor import EagerFallback, compile_mode


def test_modes_and_the_default_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode("auto", cpu) is None and compile_mode("auto", cuda) == "default"
    assert compile_mode(True, cpu) == "default" and compile_mode("off", cuda) is None
    assert compile_mode("reduce-overhead", cuda) == "reduce-overhead"
    with pytest.raises(CarsegError, match="compile='fast'"):
        compile_mode("fast", cpu)


def test_a_network_that_fails_to_compile_runs_eagerly_with_one_warning(monkeypatch):
    def broken(net, mode):
        def run(x):
            raise RuntimeError("no backend here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    wrapped = EagerFallback(net, "max-autotune")
    x = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="max-autotune.*no backend here"):
        first = wrapped(x)
    torch.testing.assert_close(first, net(x))
    torch.testing.assert_close(wrapped(x), net(x))  # and from then on without trying again
    assert wrapped.compiled is None
