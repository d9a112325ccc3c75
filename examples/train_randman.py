"""Train the paper's network on Randman and look at what it learned (about 20 s on 2 cores).

    python examples/train_randman.py [EPOCHS]
"""

import sys

import spikegrad as sg

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 100  # patience usually ends it near 50
config = sg.load_config("randman", [f"training.epochs={epochs}"])
result = sg.train(config, out_dir=None, progress=True)
print(f"test accuracy {result['test_accuracy']:.3f} after {result['epochs_completed']} epochs "
      f"(best {result['best_epoch']}, stopped by {result['stop_reason']}), "
      f"{result['hidden_spikes_per_neuron'][0]:.2f} hidden spikes per neuron per sample")
