"""The half_plus_three export: y = 0.5 x + 3 behind the REST tutorial call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

tf = pytest.importorskip("tensorflow")
export_half_plus_three = pytest.importorskip("training_jobs.half_plus_three.export_half_plus_three")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models") / "half_plus_three"
    assert export_half_plus_three.main([f"--model_dir={base}", "--model_version=1"]) == 0
    return base / "1"


def test_predicts_the_tutorial_answer(exported: Path) -> None:
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    # The REST body {"instances": [1.0, 2.0, 5.0]} becomes a [3] tensor of x.
    answer = serve(x=tf.constant([1.0, 2.0, 5.0]))
    assert list(answer) == ["y"]
    assert answer["y"].numpy().tolist() == [3.5, 4.0, 5.5]


def test_signature_accepts_rows_of_scalars(exported: Path) -> None:
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            sess, [tf.saved_model.SERVING], str(exported)
        )
    signature = meta_graph.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["x"].dtype == tf.float32.as_datatype_enum
    # One unknown batch dimension and nothing else: each REST instance is a scalar.
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1]
    assert [d.size for d in signature.outputs["y"].tensor_shape.dim] == [-1]


def test_has_variables_and_no_staging_left(exported: Path) -> None:
    assert (exported / "saved_model.pb").is_file()
    assert (exported / "variables").is_dir()
    assert [p.name for p in exported.parent.iterdir()] == ["1"]


def test_refuses_to_overwrite_a_version(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (exported / "saved_model.pb").read_bytes()
    code = export_half_plus_three.main([f"--model_dir={exported.parent}", "--model_version=1"])
    assert code == 1
    assert "already exists" in capsys.readouterr().err
    assert (exported / "saved_model.pb").read_bytes() == before


def test_rest_rows_through_the_served_function(exported: Path) -> None:
    # Large batches go through the same signature unchanged.
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    xs = np.linspace(-10, 10, 41, dtype=np.float32)
    np.testing.assert_allclose(serve(x=tf.constant(xs))["y"].numpy(), 0.5 * xs + 3)
