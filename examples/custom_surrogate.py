"""A surrogate derivative of your own: one function, then use it by name anywhere.

    python examples/custom_surrogate.py [EPOCHS]
"""

import sys

import torch

import spikegrad as sg


@sg.register_surrogate("triangle_squared")
def triangle_squared(x: torch.Tensor, slope: float) -> torch.Tensor:
    """(1 - β|x|)^2 inside |x| < 1/β, 0 outside; peak 1."""
    return torch.clamp(1.0 - slope * x.abs(), min=0.0) ** 2


epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
config = sg.load_config("randman", [f"training.epochs={epochs}",
                                    "surrogate.name=triangle_squared", "surrogate.slope=2"])
result = sg.train(config)  # the fast engine evaluates a user surrogate with PyTorch
print(f"triangle_squared, slope 2: test accuracy {result['test_accuracy']:.3f}")
