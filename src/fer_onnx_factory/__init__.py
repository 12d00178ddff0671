"""The fer-onnx model factory: how the bundled classifiers are made, by stage.

``pip install 'fer-onnx[train]'`` adds what it needs (TensorFlow, tf2onnx, onnx, pandas,
matplotlib); the runtime library ``fer_onnx`` never imports it. One command line,
``fer-onnx-factory COMMAND`` (:mod:`fer_onnx_factory.cli`), runs each step; a recipe file
(``fer-onnx-factory recipe recipes/shipped.toml``) chains them. Stages, each importing only
earlier ones:

* :mod:`~fer_onnx_factory.data`: datasets (FER2013 CSV, FER+ votes, folder trees, ``.npz``)
  and the framing of faces as the runtime frames them;
* :mod:`~fer_onnx_factory.model`: the Keras networks and their pretrained starts;
* :mod:`~fer_onnx_factory.train`: a run's configuration, training and distillation;
* :mod:`~fer_onnx_factory.evaluate`: reports, the validation suite, comparisons;
* :mod:`~fer_onnx_factory.tune`: weight averaging, BatchNorm re-estimation, class biases and
  priors, rebuilding an exported network;
* :mod:`~fer_onnx_factory.export`: ONNX export, int8 quantization, parity, bundles, cards;
* :mod:`~fer_onnx_factory.recipe`: the resumable chain of steps.

Shared by every stage: :mod:`~fer_onnx_factory.errors`, :mod:`~fer_onnx_factory.report`
(run reports) and :mod:`~fer_onnx_factory.ledger` (the record of every run).
"""
