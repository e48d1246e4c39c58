"""Moving weights between Keras models and volreg networks."""

from volreg.interop.keras_weights import KerasWeights, load_keras_weights

__all__ = ["KerasWeights", "load_keras_weights"]
