"""Spike rasters of a trained network: input, hidden layer and readout on one test sample.

    python examples/spike_rasters.py [EPOCHS] [OUT.png]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import spikegrad as sg  # noqa: E402

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
out = sys.argv[2] if len(sys.argv) > 2 else "rasters.png"
trainer = sg.Trainer(sg.load_config("randman", [f"training.epochs={epochs}"]), progress=False)
trainer.fit()
trainer.model.load_state_dict(trainer.state.best_model_state)
inputs, labels = trainer.data.test.batch([0])
with torch.no_grad():
    output = trainer.model(inputs)
figure, axes = plt.subplots(3, 1, figsize=(6, 6), sharex=True)
for ax, spikes, name in ((axes[0], inputs[0], "input unit"),
                         (axes[1], output.hidden_spikes[0][0], "hidden neuron")):
    steps, units = torch.nonzero(spikes, as_tuple=True)
    ax.scatter(steps, units, s=3, color="k")
    ax.set_ylabel(name)
axes[2].plot(output.readout[0])
axes[2].set(xlabel="time step", ylabel="readout U_out", title=f"true class {int(labels[0])}")
figure.savefig(out, dpi=100, bbox_inches="tight")
print(f"wrote {out}")
