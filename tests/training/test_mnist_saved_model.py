"""The MNIST trainer: training, the exported signatures, atomic immutable export, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training_jobs.common import export_util

pytestmark = pytest.mark.tensorflow

tf = pytest.importorskip("tensorflow")
mnist_saved_model = pytest.importorskip("training_jobs.mnist.mnist_saved_model")

REPO_ROOT = Path(__file__).resolve().parents[2]
# The conftest fixtures' type; not imported from conftest, which is no package.
TrainedExport = Any


def _signature_defs(version_dir: Path) -> dict[str, Any]:
    """SignatureDefs as TF Serving sees them (method names are only visible here)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            sess, [tf.saved_model.SERVING], str(version_dir)
        )
    return dict(meta_graph.signature_def)


def _shape(tensor_info: Any) -> list[int]:
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def _examples(images: np.ndarray) -> list[bytes]:
    return [
        tf.train.Example(
            features=tf.train.Features(
                feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=row))}
            )
        ).SerializeToString()
        for row in images
    ]


def test_signature_defs_match_the_tutorial(mnist_v1: TrainedExport) -> None:
    signatures = _signature_defs(mnist_v1.version_dir)
    assert set(signatures) == {"predict_images", "serving_default"}

    predict = signatures["predict_images"]
    assert predict.method_name == "tensorflow/serving/predict"
    assert set(predict.inputs) == {"images"} and set(predict.outputs) == {"scores"}
    assert predict.inputs["images"].dtype == tf.float32.as_datatype_enum
    assert _shape(predict.inputs["images"]) == [-1, 784]
    assert predict.outputs["scores"].dtype == tf.float32.as_datatype_enum
    assert _shape(predict.outputs["scores"]) == [-1, 10]

    classify = signatures["serving_default"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert set(classify.inputs) == {"inputs"}
    assert set(classify.outputs) == {"classes", "scores"}
    assert classify.inputs["inputs"].dtype == tf.string.as_datatype_enum
    assert _shape(classify.inputs["inputs"]) == [-1]
    assert classify.outputs["classes"].dtype == tf.string.as_datatype_enum
    assert classify.outputs["scores"].dtype == tf.float32.as_datatype_enum
    assert _shape(classify.outputs["classes"]) == [-1, 10]
    assert _shape(classify.outputs["scores"]) == [-1, 10]


def test_export_layout(mnist_v1: TrainedExport) -> None:
    assert (mnist_v1.version_dir / "saved_model.pb").is_file()
    assert (mnist_v1.version_dir / "variables").is_dir()
    # Only the numbered folder: no staging folder left behind.
    assert [p.name for p in mnist_v1.base_dir.iterdir()] == ["1"]


def test_predict_images_runs_on_real_data(
    mnist_v1: TrainedExport, loaded_v1: Any, mnist_data: Any
) -> None:
    test = mnist_data.test
    scores = loaded_v1.signatures["predict_images"](images=tf.constant(test.images))["scores"]
    scores = scores.numpy()

    assert scores.shape == (len(test), 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    predicted = scores.argmax(axis=1)
    np.testing.assert_array_equal(predicted, mnist_v1.model.predict(test.images))
    exported_error = float(np.mean(predicted != test.labels))
    assert exported_error == pytest.approx(mnist_v1.model.error_rate(test))
    # Version 1 is meant to be mediocre (tutorial: 13.1%), far better than chance.
    assert 0.05 < exported_error < 0.25


def test_classify_signature_ranks_all_digits(
    mnist_v1: TrainedExport, loaded_v1: Any, mnist_data: Any
) -> None:
    images = mnist_data.test.images[:64]
    answer = loaded_v1.signatures["serving_default"](inputs=tf.constant(_examples(images)))
    classes = answer["classes"].numpy().astype(str)
    scores = answer["scores"].numpy()

    assert classes.shape == scores.shape == (64, 10)
    assert all(sorted(row) == [str(d) for d in range(10)] for row in classes)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best class first
    np.testing.assert_array_equal(classes[:, 0].astype(int), mnist_v1.model.predict(images))


def test_training_is_deterministic_and_learns(mnist_data: Any) -> None:
    first = mnist_saved_model.train(mnist_data.train, 20, seed=5)
    second = mnist_saved_model.train(mnist_data.train, 20, seed=5)
    np.testing.assert_array_equal(first.weights, second.weights)
    np.testing.assert_array_equal(first.biases, second.biases)
    assert first.error_rate(mnist_data.test) < 0.5


def test_training_needs_positive_iterations(mnist_data: Any) -> None:
    with pytest.raises(ValueError, match="positive"):
        mnist_saved_model.train(mnist_data.train, 0)


def test_existing_version_is_refused_before_training(
    mnist_v1: TrainedExport, capsys: pytest.CaptureFixture[str]
) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(mnist_v1.base_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in mnist_v1.base_dir.rglob("*")
        }

    before = snapshot()
    code = mnist_saved_model.main(
        ["--training_iteration=10", "--model_version=1", f"--model_dir={mnist_v1.base_dir}"]
    )
    err = capsys.readouterr().err.strip()

    assert code == 1
    assert err.startswith("mnist_saved_model: error: version 1 already exists")
    assert "\n" not in err
    assert snapshot() == before


def test_failed_export_leaves_no_version(
    mnist_v1: TrainedExport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = mnist_saved_model.write_saved_model

    def write_then_crash(model: Any, path: Path) -> None:
        real_write(model, path)  # a complete SavedModel exists in staging...
        raise RuntimeError("killed before publishing")  # ...but is never published

    monkeypatch.setattr(mnist_saved_model, "write_saved_model", write_then_crash)
    with pytest.raises(RuntimeError, match="killed before publishing"):
        mnist_saved_model.export(mnist_v1.model, tmp_path, 4)
    assert list(tmp_path.iterdir()) == []


def test_command_line_trains_exports_and_reports(tmp_path: Path) -> None:
    # Run as the tutorial does, a plain script, to cover the CLI end to end.
    script = REPO_ROOT / "training_jobs" / "mnist" / "mnist_saved_model.py"
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            "--training_iteration=20",
            "--model_version=3",
            f"--model_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    last = completed.stdout.strip().splitlines()[-1]
    assert last.startswith("Test-set error rate: ") and "of 1000 images" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3"]
    assert (tmp_path / "3" / "saved_model.pb").is_file()
    assert not any(p.name.startswith(export_util.STAGING_PREFIX) for p in tmp_path.iterdir())
