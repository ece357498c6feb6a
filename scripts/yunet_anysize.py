"""Write YuNet with any input size: the bundled file declares a fixed 1x3x640x640 input, which
OpenCV ignores (it reshapes the graph to each frame) but onnxruntime enforces. The on-device page
(onnxruntime-web) needs the frame's own padded size, so this copy declares height and width as
symbolic and drops the stored intermediate shapes; weights and nodes are untouched (a test holds
its outputs to the original's).

    python scripts/yunet_anysize.py     # writes emo/weights/detectors/face_detection_yunet_2023mar_anysize.onnx

Needs the ``onnx`` package (``pip install 'emo[onnx]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from emo.inference.detect import YUNET_ANYSIZE_PATH, YUNET_PATH


def anysize(src: Path = YUNET_PATH) -> onnx.ModelProto:
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "height"), (3, "width")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    for out in model.graph.output:
        d = out.type.tensor_type.shape.dim[1]
        d.ClearField("dim_value")
        d.dim_param = f"cells_{out.name.split('_')[1]}"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=YUNET_ANYSIZE_PATH)
    args = p.parse_args()
    onnx.save(anysize(), str(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
