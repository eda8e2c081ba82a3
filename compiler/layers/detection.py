"""Detection heads (SSD, Faster R-CNN) and the Python escape hatch.

DetectionOutput and Python layers produce data-dependent sizes: DetectionOutput has Caffe's
build-time [1, 1, 1, 7]; a Python layer needs the user to declare its output shape.
"""
from __future__ import annotations

import math

from ..errors import NetcError
from .base import Layer, Param, register, require_4d


def prior_aspect_ratios(a) -> list[float]:
    """SSD PriorBoxLayer::LayerSetUp: 1, then each new ratio and (with flip) its inverse."""
    ratios = [1.0]
    for ar in a["aspect_ratio"]:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if a["flip"]:
            ratios.append(1.0 / ar)
    return ratios


@register
class PriorBox(Layer):
    type = "PriorBox"
    cost = "not counted (box coordinates from the input size)"
    messages = ("prior_box_param",)
    params = (Param("min_size", "float", repeated=True, positive=True),
              Param("max_size", "float", repeated=True, positive=True),
              Param("aspect_ratio", "float", repeated=True, positive=True),
              Param("flip", "bool", True), Param("clip", "bool", False),
              Param("variance", "float", repeated=True),
              Param("img_size"), Param("img_h"), Param("img_w"),
              Param("step", "float"), Param("step_h", "float"), Param("step_w", "float"),
              Param("offset", "float", 0.5))
    family = "detection"
    short = "priorbox"
    min_inputs = max_inputs = 2

    def normalize(self, a, loc):
        if not a["min_size"]:
            raise NetcError('PriorBox needs at least one "min_size"', loc)
        if a["max_size"] and len(a["max_size"]) != len(a["min_size"]):
            raise NetcError("PriorBox needs as many max_size as min_size values", loc)
        return a

    def num_priors(self, a) -> int:
        return len(prior_aspect_ratios(a)) * len(a["min_size"]) + len(a["max_size"])

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        h, w = ins[0][2], ins[0][3]
        return [(1, 2, h * w * self.num_priors(a) * 4)]


@register
class DetectionOutput(Layer):
    """Output is [1, 1, K, 7] rows of (image, label, score, xmin, ymin, xmax, ymax). K is known
    only after non-maximum suppression: Caffe's Reshape sets [1, 1, 1, 7] and so does netc (at
    most keep_top_k rows come out). Caffe's checks that the priors match the location and
    confidence predictions hold here too."""
    type = "DetectionOutput"
    cost = "not counted (data-dependent: decoding and non-maximum suppression)"
    messages = ("detection_output_param",)
    params = (Param("num_classes", positive=True), Param("share_location", "bool", True),
              Param("background_label_id", default=0, min=None),
              Param("nms_param", "msg"), Param("save_output_param", "msg"),
              Param("code_type", "enum", "CORNER", choices=("CORNER", "CENTER_SIZE", "CORNER_SIZE"), base=1),
              Param("variance_encoded_in_target", "bool", False),
              Param("keep_top_k", default=-1, min=-1),
              Param("confidence_threshold", "float", min=None),
              Param("visualize", "bool", False), Param("visualize_threshold", "float"),
              Param("save_file", "str"))
    family = "detection"
    short = "detection"
    min_inputs, max_inputs = 3, 4

    def shapes(self, ins, a, loc):
        if a["num_classes"] is None:
            raise NetcError('DetectionOutput needs "num_classes"', loc)
        priors = ins[2][2] // 4 if len(ins[2]) > 2 else ins[2][-1] // 4
        loc_classes = 1 if a["share_location"] else a["num_classes"]
        for what, got, want in (("location", ins[0][1], priors * loc_classes * 4),
                                ("confidence", ins[1][1], priors * a["num_classes"])):
            if got != want:
                raise NetcError(f"DetectionOutput: {priors} priors need {want} {what} predictions, the input "
                                f"has {got} (Caffe's check: the number of priors must match)", loc)
        return [(1, 1, 1, 7)]

    def brief(self, a):
        return f"\u2264{a['keep_top_k']} boxes" if a["keep_top_k"] >= 0 else ""


@register
class ROIPooling(Layer):
    type = "ROIPooling"
    cost = "not counted (data-dependent windows)"
    messages = ("roi_pooling_param",)
    params = (Param("pooled_h", positive=True, default=1), Param("pooled_w", positive=True, default=1),
              Param("spatial_scale", "float", 1.0, positive=True))
    family = "pool"
    short = "roipool"
    min_inputs = max_inputs = 2

    def shapes(self, ins, a, loc):
        require_4d(self, ins[0], loc)
        if len(ins[1]) < 2 or ins[1][-1] != 5:
            raise NetcError("ROIPooling's second input must hold (batch, x1, y1, x2, y2) rows", loc)
        return [(math.prod(ins[1][:-1]), ins[0][1], a["pooled_h"], a["pooled_w"])]


@register
class Python(Layer):
    type = "Python"
    cost = "unknown (user code)"
    aliases = ("PYTHON",)
    messages = ("python_param",)
    params = (Param("module", "str"), Param("layer", "str"), Param("param_str", "str"),
              Param("share_in_parallel", "bool", False))
    family = "other"
    short = "python"
    min_inputs, max_inputs = 0, None
    outputs = None

    def multi_shapes(self, ins, a, loc, ntops):
        raise NetcError(
            f'cannot infer the output shape of a Python layer ({a["module"]}.{a["layer"]})', loc,
            hint='declare it: in a .prototxt add the comment "# netc: output_shape 300x5" inside the '
                 'layer (one per top); in a .net file pass output_shape=[300, 5]')


@register
class Implicit(Layer):
    """Netscope's marker for a network output ("implicit" layers in its Faster R-CNN presets):
    reads its bottoms, produces nothing, costs nothing."""
    type = "Implicit"
    cost = "none: marks an output"
    aliases = ("implicit",)
    family = "other"
    short = "output"
    min_inputs, max_inputs = 1, None
    outputs = 0
    sink = True

    def shapes(self, ins, a, loc):
        return []
