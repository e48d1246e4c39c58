import os

# Keras 3 is the numerical reference and runs on its torch backend, so TensorFlow is not needed.
# The backend is fixed when keras is first imported, so it is set before any test module loads.
os.environ.setdefault("KERAS_BACKEND", "torch")
