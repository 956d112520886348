"""Building what a combination runs: the model under test, its ONNX export and transforms
(fp16, int8), output naming, source digests and the artifact cache."""
