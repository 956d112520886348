"""Backend outputs reach the spec's names even where a runtime folded the node that named
them; a mapping that cannot hold is one clear error naming both sides."""

import numpy as np
import pytest

from infergate.backends import RunnerError
from infergate.backends.openvino_cpu import OpenVinoRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("openvino")


def _graph(tmp_path, outputs):
    """y and z are both Identity(relu(x)): OpenVINO folds them into one tensor named {h, z}
    and its get_any_name() may answer 'h' (the field case: "outputs ['y'] missing")."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Identity", ["h"], ["y"]),
             helper.make_node("Identity", ["h"], ["z"]), helper.make_node("Neg", ["h"], ["w"])]
    graph = helper.make_graph(
        nodes, "folded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 3]) for o in outputs])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_outputs_of_a_folded_node_are_found_by_any_of_their_names(tmp_path):
    runner = OpenVinoRunner("folded", ("y", "z", "w"), _graph(tmp_path, ("y", "z", "w")),
                            {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    with runner:
        out = runner.run({"x": x})
    np.testing.assert_array_equal(out["z"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["w"], -np.maximum(x, 0))


def test_a_lost_name_is_found_by_position(tmp_path):
    runner = OpenVinoRunner("renamed", ("first", "second", "third"),
                            _graph(tmp_path, ("y", "z", "w")),
                            {"INFERENCE_PRECISION_HINT": "f32"})
    with runner:
        out = runner.run({"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(out["third"], -np.ones((2, 3), np.float32))


def test_a_count_mismatch_names_both_sides(tmp_path):
    runner = OpenVinoRunner("short", ("logits", "extra"), _graph(tmp_path, ("y", "z", "w")),
                            {"INFERENCE_PRECISION_HINT": "f32"})
    with pytest.raises(RunnerError, match=r"short: outputs \['logits', 'extra'\] match no .*"
                                          r"spec has 2 outputs .*compiled model 3"):
        runner.activate()


def test_a_position_of_another_kind_is_refused(tmp_path):
    """An index (int64) output cannot stand in for a float one, whatever its position."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("ArgMax", ["h"], ["idx"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "kinds", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [2])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with OpenVinoRunner("kinds", ("h", "idx"), path, {"INFERENCE_PRECISION_HINT": "f32"}) as r:
        assert r.run({"x": np.ones((2, 3), np.float32)})["h"].shape == (2, 3)  # by name
    import openvino as ov

    from infergate.backends.openvino_cpu import match_outputs

    ports = list(ov.Core().compile_model(str(path), "CPU").outputs)
    with pytest.raises(RunnerError, match=r"position 1.*is rank 1 int, not the graph's rank 1 "
                                          r"float"):
        match_outputs("kinds", ("h", "scores"), ports, [(2, "float"), (1, "float")])
