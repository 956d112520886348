"""infergate: the harness library behind the inference gate suite.

Importing it never needs onnxruntime, openvino, tensorrt or a GPU; backends import
their frameworks lazily.

PYTEST_DONT_REWRITE: this file only (it has no asserts). The pytest11 entry point marks the
package for assertion rewriting; a session that imported infergate before its plugin loaded
(pytester's in-process runs) would warn that it cannot rewrite it. Submodules are rewritten.
"""

__version__ = "0.1.0"
