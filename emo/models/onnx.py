"""Checkpoints as ONNX models, for onnxruntime: what the runtime (and every bundled model) runs.

The model maps normalised faces (N, 1, S, S) to probabilities (N, C); an ensemble is one graph
that averages its members' probabilities. It carries its class names, preprocessing, labels and
(for a bundled model) the TTA chosen on PublicTest as metadata, so the runtime needs nothing else.

Weights are stored as compactly as the checkpoint holds them, with no change to any value: a
weight the checkpoint packed as int8 (``emo.models.int8``) is stored as those int8 values and
their per-channel scales, one packed as fp16 in fp16, each followed by the node that turns it
back into the same float32 tensor (``Cast``, then ``Mul`` by the scales). onnxruntime folds those
nodes into constants when it loads the model, so it computes in float32 at fp32's speed, on
exactly the weights PyTorch uses. Batch norm stays a node of its own for that reason (folded
into the convolution, weights would no longer be the stored ones); onnxruntime fuses it at load.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emo.data.fer2013 import TRAIN, default_cache_dir, load_fer2013
from emo.data.transforms import preprocess_faces
from emo.errors import EmoError
from emo.models.checkpoint import FORMAT_KEY, read_checkpoint
from emo.models.ensemble import Ensemble
from emo.models.int8 import SCALES_KEY, dequantize
from emo.models.module import EmoModule

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "faces", "probs"
ONNX_HINT = "pip install 'emo[onnx]' (onnx, onnxscript)"
#: Initializers smaller than this many values stay float32 (biases, shapes: bytes, not megabytes).
MIN_COMPACT_SIZE = 64


class Probabilities(nn.Module):
    """The networks' mean softmax: what the ONNX model computes (one network: its softmax)."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.nets) == 1:
            return self.nets[0](x).float().softmax(-1)  # (N, 1, S, S) -> (N, C)
        return torch.stack([net(x).float().softmax(-1) for net in self.nets]).mean(0)


def _nets(module: EmoModule | Ensemble) -> list[nn.Module]:
    if isinstance(module, Ensemble):
        return [net for m in module.members for net in _nets(m)]
    return [module.net]


def int8_weights_of(ckpt: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The int8 weights a packed checkpoint (or each member of an ensemble file) stores, as
    ``(q, scales, w)``: the int8 values, their per-channel scales shaped to broadcast, and the
    float32 weights they load as (``emo.models.int8.dequantize``, what PyTorch and the export
    use), which ``compact`` recognises and stores as ``q`` and ``scales`` instead."""
    raw = read_checkpoint(ckpt, dequantize=False)
    out = []
    for packed in raw["members"] if FORMAT_KEY in raw else [raw]:
        for key, scale in (packed.get(SCALES_KEY) or {}).items():
            q = packed["state_dict"][key]
            shaped = scale.float().view(-1, *([1] * (q.ndim - 1)))
            out.append((q.numpy(), shaped.numpy(), dequantize(q, scale).numpy()))
    return out


def _fingerprint(a: np.ndarray) -> tuple:
    return a.shape, hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def compact(proto, int8_weights: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = ()) -> None:
    """Store ``proto``'s float32 weights as the checkpoint did, in place, values unchanged: as
    int8 with per-channel scales where one of ``int8_weights`` (``int8_weights_of``) is exactly
    the initializer, as fp16 where the initializer is exactly an fp16 tensor; each behind the
    nodes that rebuild it."""
    from onnx import TensorProto, helper, numpy_helper

    stored = {_fingerprint(w): (q, scale) for q, scale, w in int8_weights}
    kept, nodes = [], []
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32 or a.size < MIN_COMPACT_SIZE:
            kept.append(init)
            continue
        name, int8 = init.name, stored.get(_fingerprint(a))
        if int8 is not None:
            kept += [
                numpy_helper.from_array(int8[0], f"{name}.int8"),
                numpy_helper.from_array(int8[1], f"{name}.scale"),
            ]
            nodes += [
                helper.make_node("Cast", [f"{name}.int8"], [f"{name}.float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{name}.float", f"{name}.scale"], [name]),
            ]
        elif np.array_equal(a.astype(np.float16).astype(np.float32), a):
            kept.append(numpy_helper.from_array(a.astype(np.float16), f"{name}.fp16"))
            nodes.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT))
        else:
            kept.append(init)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    graph_nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes + graph_nodes)  # the weights first: a graph is in topological order


def _fold(proto):
    """Constant folding and dead-node removal, the exporter's optimiser less its rewrite rules
    (one folds batch norm into the convolutions, which changes the stored weights)."""
    from onnxscript import optimizer

    optimizer.fold_constants(proto)  # in place
    optimizer.remove_unused_nodes(proto)
    return proto


def _strip(proto):
    """The exporter's notes on each node (its stack traces, with the paths of the machine that
    exported: a third of a small model's bytes) and the graph's doc string, removed in place."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    proto.graph.doc_string = ""
    proto.doc_string = ""
    return proto


def export_onnx(
    module: EmoModule | Ensemble,
    path: str | Path | None = None,
    metadata: Mapping[str, str] | None = None,
    int8_weights: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
    compact_weights: bool = True,
) -> bytes:
    """The ONNX model of a checkpoint's network (an ensemble's: one graph, mean probabilities),
    with its metadata (``metadata`` adds keys, e.g. ``emo_tta``), weights stored as compactly as
    the checkpoint held them (``compact``; ``compact_weights=False``: all float32, batch norm
    folded, what ``quantize_int8`` starts from); also written to ``path`` when given.

    Raises:
        EmoError: the ONNX exporter's packages are missing.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise EmoError(f"ONNX export needs onnx and onnxscript: {ONNX_HINT}") from None
    size = int(module.preprocess.image_size)
    wrapper = Probabilities(_nets(module)).eval()
    example = torch.zeros(2, 1, size, size)
    quiet = io.StringIO()
    # The exporter narrates its steps on stdout and warns about its own internals. Its optimiser
    # folds batch norm into the convolutions, which changes the stored weights: for compact
    # storage _fold does the rest of its work; quantize_int8 starts from its full output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            optimize=not compact_weights,
            verbose=False,
        )
    proto = program.model_proto
    _strip(proto)
    if compact_weights:
        proto = _fold(proto)
        compact(proto, int8_weights)
    meta = {
        "emo_class_names": json.dumps(list(module.class_names)),
        "emo_preprocess": json.dumps(module.preprocess.as_dict()),
        "emo_arch": str(module.hparams.arch),
        "emo_labels": str(module.labels),
        **(metadata or {}),
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def quantize_int8(
    module: EmoModule | Ensemble,
    calibration: np.ndarray,
    metadata: Mapping[str, str] | None = None,
    batch: int = 32,
) -> bytes:
    """``module`` as a static int8 ONNX model (onnxruntime's QOperator format, per-channel int8
    weights, uint8 activations; the softmax and the classifier in float, ``_float_head``), its
    activation ranges calibrated on ``calibration``: normalised faces (N, 1, S, S) from the
    training split, never the test one. It quantises the exporter's own optimised float32 graph
    (``export_onnx(compact_weights=False)``): onnxruntime's shape inference cannot read the
    compact one.

    Weights use 7 of their 8 bits (``reduce_range``): x86 CPUs without VNNI (AVX2, and AVX-512
    before VNNI) multiply uint8 by int8 with 16-bit saturating adds (VPMADDUBSW), which full-range
    weights can overflow, so the same file would score differently on different CPUs. Measured on a
    2-core AVX2 Xeon for the default model: full range lost 0.33 points of PublicTest accuracy
    against fp32, 7-bit weights scored 0.11 points above it, 1.94 ms a face against 2.83 ms for
    onnxruntime fp32 on one thread.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                {INPUT_NAME: calibration[i : i + batch].astype(np.float32)}
                for i in range(0, len(calibration), batch)
            )

        def get_next(self):
            return next(self.batches, None)

    model = export_onnx(module, metadata=metadata, compact_weights=False)
    meta = {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32, pre, int8 = (Path(tmp) / f for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        quant_pre_process(str(fp32), str(pre))  # shape inference and graph clean-up first
        quantize_static(
            str(pre),
            str(int8),
            Reader(),
            nodes_to_exclude=_float_head(onnx.load(str(pre))),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # no VPMADDUBSW saturation on CPUs without VNNI (see above)
        )
        proto = _strip(onnx.load(str(int8)))
    del proto.metadata_props[:]
    for key, value in {**meta, "emo_quantization": "int8 static"}.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def _float_head(proto) -> list[str]:
    """The nodes that stay float32 in an int8 model: the softmax and the layer computing the
    logits it reads. Quantised, the probabilities came in steps of 1/256 and summed to 1 +- 0.008;
    the classifier is a few thousand multiply-adds, a rounding error of the network's cost."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    head = []
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            head.append(node.name)
            logits = producer.get(node.input[0])
            if logits is not None and logits.op_type in ("Gemm", "MatMul", "Add"):
                head.append(logits.name)
    return head


def calibration_faces(
    module: EmoModule | Ensemble, data_dir: str | Path, n: int = 512, seed: int = 0
) -> np.ndarray:
    """``n`` normalised Training faces (N, 1, S, S) of FER-2013 in ``data_dir``, for ``quantize_int8``."""
    data = load_fer2013(data_dir)
    train = np.flatnonzero(np.asarray(data.split) == TRAIN)
    idx = np.random.default_rng(seed).choice(train, min(n, len(train)), replace=False)
    return preprocess_faces(data.images[idx], module.preprocess).numpy()


def cached_onnx(ckpt: str | Path, module: EmoModule | Ensemble) -> bytes | Path:
    """The ONNX model of checkpoint ``ckpt``, exported once into ``$EMO_CACHE_DIR/onnx``.

    The key is the checkpoint's content and the torch version, so a re-trained file is exported
    again. Falls back to an in-memory export when the cache is not writable.
    """
    digest = hashlib.sha1(Path(ckpt).read_bytes())
    digest.update(torch.__version__.encode())
    cached = default_cache_dir() / "onnx" / f"{Path(ckpt).stem}-{digest.hexdigest()[:12]}.onnx"
    if cached.is_file():
        return cached
    data = export_onnx(module, int8_weights=int8_weights_of(ckpt))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(cached)  # atomic: two processes exporting at once never see half a file
    except OSError as err:
        log.warning("could not cache the ONNX model in %s (%s)", cached.parent, err)
        return data
    return cached


def parity(module: EmoModule | Ensemble, model: bytes | str | Path, n: int = 16, seed: int = 0) -> float:
    """Max absolute difference between torch's and onnxruntime's probabilities on random faces."""
    size = int(module.preprocess.image_size)
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = module.predict_proba(x).numpy()
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    probs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(probs - ref).max())
