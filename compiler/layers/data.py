"""Where tensors come from (Input, Data, ...) and where training ends (losses, accuracy)."""
from __future__ import annotations

from ..errors import NetcError
from .base import Layer, Param, register

TRANSFORM = (
    Param("crop_size", message="transform_param"),
    Param("scale", "float", 1.0, message="transform_param"),
    Param("mirror", "bool", False, message="transform_param"),
    Param("mean_file", "str", message="transform_param"),
    Param("mean_value", "float", repeated=True, message="transform_param"),
    Param("force_color", "bool", False, message="transform_param"),
    Param("force_gray", "bool", False, message="transform_param"),
    # netc's extensions for models trained outside Caffe (torchvision: RGB, /255, mean and std);
    # Caffe's TransformationParameter has no such fields, so prototxt output leaves them in a comment
    Param("std_value", "float", repeated=True, message="transform_param", positive=True,
          doc="netc: per-channel divisor after the mean"),
    Param("color_order", "enum", "BGR", choices=("BGR", "RGB"), message="transform_param",
          doc="netc: channel order the network was trained on"),
    Param("pixel_scale", "float", 1.0, message="transform_param", positive=True,
          doc="netc: multiplies 0-255 pixels before the mean (1/255 for torchvision models)"),
    Param("layout", "enum", "NCHW", choices=("NCHW", "NHWC"), message="transform_param",
          doc="netc: axis order images are fed in (NHWC: Keras models via tf2onnx)"),
)
NETC_ONLY = ("std_value", "color_order", "pixel_scale", "layout")


class _Source(Layer):
    cost = "none: fed by the user"
    family = "data"
    min_inputs = max_inputs = 0
    outputs = None
    source = True


@register
class Input(_Source):
    type = "Input"
    aliases = ("INPUT",)
    messages = ("input_param", "transform_param")
    params = (Param("shape", "shape", repeated=True), *TRANSFORM)   # how images are prepared for it
    short = "input"

    def multi_shapes(self, ins, a, loc, ntops):
        shapes = list(a["shape"])
        if len(shapes) == 1 and ntops > 1:
            shapes *= ntops
        if len(shapes) != ntops:
            raise NetcError(f"Input declares {len(shapes)} shape(s) for {ntops} top(s)", loc)
        for s in shapes:
            if not s or any(d <= 0 for d in s):
                raise NetcError(f"input shape {list(s)} needs positive sizes", loc)
        return [tuple(s) for s in shapes]


@register
class Data(_Source):
    """LMDB/LevelDB data: (batch_size, 3, crop_size, crop_size) plus a (batch_size,) label."""
    type = "Data"
    aliases = ("DATA",)
    messages = ("data_param", "transform_param", "input_param")
    params = (Param("batch_size", default=1, positive=True, message="data_param"),
              Param("source", "str", message="data_param"),
              Param("backend", "enum", "LEVELDB", choices=("LEVELDB", "LMDB"), message="data_param"),
              Param("rand_skip", default=0, message="data_param"),
              Param("prefetch", default=4, message="data_param"),
              Param("shape", "shape", repeated=True, message="input_param"), *TRANSFORM)
    short = "data"

    def feeds(self, port):
        return port == 0     # the second top is the label

    def multi_shapes(self, ins, a, loc, ntops):
        if a["shape"]:  # some presets (GoogLeNet, SqueezeNet) give a Data layer an input_param
            return Input().multi_shapes(ins, a, loc, ntops)
        if a["crop_size"] is None:
            raise NetcError("Data layer has no crop_size, so its image size is unknown: add "
                            "transform_param { crop_size: N } or use an Input layer", loc)
        n, c = a["batch_size"], 1 if a["force_gray"] else 3
        shapes = [(n, c, a["crop_size"], a["crop_size"]), (n,)]
        if ntops > 2:
            raise NetcError(f"Data layer has at most 2 tops (data, label), got {ntops}", loc)
        return shapes[:ntops]


@register
class ImageData(_Source):
    type = "ImageData"
    aliases = ("IMAGE_DATA",)
    messages = ("image_data_param", "transform_param")
    params = (Param("batch_size", default=1, positive=True, message="image_data_param"),
              Param("new_height", default=0, message="image_data_param"),
              Param("new_width", default=0, message="image_data_param"),
              Param("is_color", "bool", True, message="image_data_param"),
              Param("source", "str", message="image_data_param"),
              Param("root_folder", "str", message="image_data_param"),
              Param("shuffle", "bool", False, message="image_data_param"), *TRANSFORM)
    short = "data"

    def feeds(self, port):
        return port == 0     # the second top is the label

    def multi_shapes(self, ins, a, loc, ntops):
        h = a["crop_size"] or a["new_height"]
        w = a["crop_size"] or a["new_width"]
        if not h or not w:
            raise NetcError("ImageData needs crop_size or new_height/new_width to know its size", loc)
        return [(a["batch_size"], 3 if a["is_color"] else 1, h, w), (a["batch_size"],)][:ntops]


@register
class DenseImageData(_Source):
    """SegNet's data layer (caffe-segnet): images and per-pixel label maps listed in `source`.
    Its size is the first image's unless new_height/new_width or crop_size say: give it with
    --input-shape data=NxCxHxW; the label map is [N, 1, H, W]."""
    type = "DenseImageData"
    messages = ("dense_image_data_param", "transform_param")
    params = (Param("batch_size", default=1, positive=True, message="dense_image_data_param"),
              Param("new_height", default=0, message="dense_image_data_param"),
              Param("new_width", default=0, message="dense_image_data_param"),
              Param("crop_height", default=0, message="dense_image_data_param"),
              Param("crop_width", default=0, message="dense_image_data_param"),
              Param("is_color", "bool", True, message="dense_image_data_param"),
              Param("source", "str", message="dense_image_data_param"),
              Param("root_folder", "str", message="dense_image_data_param"),
              Param("mirror", "bool", False, message="dense_image_data_param"),
              Param("shuffle", "bool", False, message="dense_image_data_param"), *TRANSFORM)
    short = "data"

    def feeds(self, port):
        return port == 0     # the second top is the label map

    def _sized(self, n, c, h, w, ntops):
        if ntops > 2:
            raise NetcError(f"DenseImageData has at most 2 tops (data, label), got {ntops}")
        return [(n, c, h, w), (n, 1, h, w)][:ntops]

    def multi_shapes(self, ins, a, loc, ntops):
        h = a["crop_height"] or a["crop_size"] or a["new_height"]
        w = a["crop_width"] or a["crop_size"] or a["new_width"]
        if not h or not w:
            raise NetcError("DenseImageData takes its size from the first image of its source list: give it "
                            "with --input-shape NAME=NxCxHxW (SegNet's CamVid: data=1x3x360x480)", loc)
        return self._sized(a["batch_size"], 3 if a["is_color"] else 1, h, w, ntops)

    def given_shapes(self, given, a, loc):
        data = given[0]
        if data is None or len(data) != 4:
            raise NetcError("--input-shape for DenseImageData gives its image blob as NxCxHxW", loc)
        return self._sized(*data, len(given))


@register
class DummyData(_Source):
    type = "DummyData"
    messages = ("dummy_data_param",)
    params = (Param("shape", "shape", repeated=True), Param("data_filler", "msg", repeated=True))
    short = "dummy"

    def multi_shapes(self, ins, a, loc, ntops):
        return Input().multi_shapes(ins, a, loc, ntops)


class _Loss(Layer):
    """Kept in the graph (people look for them) but outside the forward path."""
    cost = "not counted: training only"
    family = "loss"
    short = "loss"
    forward = False
    min_inputs, max_inputs = 1, 3
    outputs = None
    messages = ("loss_param",)
    params = (Param("ignore_label", min=None, message="loss_param"),
              Param("normalize", "bool", message="loss_param"),
              Param("normalization", "enum", "VALID", choices=("FULL", "VALID", "BATCH_SIZE", "NONE"),
                    message="loss_param"),
              Param("axis", default=1, min=None, message="softmax_param"))

    def multi_shapes(self, ins, a, loc, ntops):
        return [()] * ntops


def _loss(name, *aliases):
    return register(type(name, (_Loss,), {"type": name, "aliases": aliases,
                                          "messages": ("loss_param", "softmax_param")}))


_loss("SoftmaxWithLoss", "SOFTMAX_LOSS")
_loss("EuclideanLoss", "EUCLIDEAN_LOSS")
_loss("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS")
_loss("HingeLoss", "HINGE_LOSS")
_loss("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS")
_loss("InfogainLoss", "INFOGAIN_LOSS")
_loss("ContrastiveLoss", "CONTRASTIVE_LOSS")
_loss("SmoothL1Loss")


@register
class Accuracy(_Loss):
    type = "Accuracy"
    aliases = ("ACCURACY",)
    messages = ("accuracy_param",)
    params = (Param("top_k", default=1, positive=True), Param("axis", default=1, min=None),
              Param("ignore_label", min=None))
    short = "accuracy"
    family = "loss"


@register
class Silence(Layer):
    """Caffe's Silence: swallows blobs nobody else reads (so Caffe does not print them). It
    computes nothing; netc keeps it out of the forward path as it does losses."""
    type = "Silence"
    aliases = ("SILENCE",)
    cost = "none: reads its inputs and writes nothing"
    family = "loss"
    short = "silence"
    forward = False
    swallows = True
    min_inputs, max_inputs = 1, None
    outputs = 0

    def shapes(self, ins, a, loc):
        return []
