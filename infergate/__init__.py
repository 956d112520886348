"""infergate: the harness library behind the inference gate suite.

Importing it never needs onnxruntime, openvino, tensorrt or a GPU; backends import
their frameworks lazily.
"""

__version__ = "0.1.0"
