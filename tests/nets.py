"""Shared test networks as prototxt text, and the two helpers that write them.

A plain helper module, not a test module: the test modules (and the scripts some of them run
in a subprocess) import from here, never from one another.
"""
from __future__ import annotations


def inp(*dims, name="data"):
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ ' + \
        " ".join(f"dim: {d}" for d in dims) + " } } }\n"


def layer(name, typ, bottoms, tops=None, body=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    return (f'layer {{ name: "{name}" type: "{typ}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops) + f" {body} }}\n")


CONV_NET = inp(2, 4, 17, 19) + "".join([
    layer("conv/1", "Convolution", "data", "c1", "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 "
          "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 }"),
    layer("bn1", "BatchNorm", "c1", "c1", "batch_norm_param { eps: 0.001 }"),
    layer("sc1", "Scale", "c1", "c1", "scale_param { bias_term: true }"),
    layer("relu1", "ReLU", "c1", "c1", "relu_param { negative_slope: 0.1 }"),
    layer("conv2", "Convolution", "c1", "c2", "convolution_param { num_output: 8 kernel_size: 3 pad: 2 "
          "dilation: 2 group: 2 bias_term: false }"),
    layer("dw", "ConvolutionDepthwise", "c2", "dw", "convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 }"),
    layer("relu6", "ReLU6", "dw", "dw", "clip_param { min: 0 max: 0.5 }"),
    layer("pw", "Convolution", "dw", "pw", "convolution_param { num_output: 10 kernel_size: 1 group: 2 }"),
    layer("pw2", "Convolution", "pw", "pw2", "convolution_param { num_output: 6 kernel_size: 1 stride: 2 }"),
    layer("up", "Deconvolution", "pw", "up", "convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 }"),
    layer("up2", "Deconvolution", "up", "up2", "convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 stride: 3 "
          "dilation: 2 bias_term: false }"),
    layer("fc", "InnerProduct", "pw2", "fc", "inner_product_param { num_output: 7 }"),
    layer("fc_bn", "BatchNorm", "fc", "fc"),
    layer("fc_relu", "ReLU", "fc", "fc"),
    layer("fc2", "InnerProduct", "fc", "fc2", "inner_product_param { num_output: 5 transpose: true }"),
    layer("prob", "Softmax", "fc2", "prob"),
])

POOL_NET = inp(1, 3, 13, 12) + "".join([
    layer("mp", "Pooling", "data", "mp", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    layer("ap", "Pooling", "data", "ap", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    layer("p3", "Pooling", "data", "p3", "pooling_param { pool: MAX kernel_size: 3 stride: 3 }"),
    layer("apc", "Pooling", "p3", "apc", "pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 1 }"),
    layer("mpc", "Pooling", "p3", "mpc", "pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 1 }"),
    layer("ahw", "Pooling", "data", "ahw", "pooling_param { pool: AVE kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3 pad_h: 0 pad_w: 1 }"),
    layer("fl", "Pooling", "data", "fl", "pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }"),
    layer("gap", "Pooling", "mp", "gap", "pooling_param { pool: AVE global_pooling: true }"),
    layer("gmp", "Pooling", "mp", "gmp", "pooling_param { pool: MAX global_pooling: true }"),
    layer("lrn", "LRN", "data", "lrn", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"),
    layer("lrn5", "LRN", "mp", "lrn5", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.6 }"),
    layer("lrnw", "LRN", "data", "lrnw", "lrn_param { local_size: 3 alpha: 0.8 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
])

POINT_NET = inp(2, 6, 5, 4) + "".join([
    layer("sig", "Sigmoid", "data", "sig"),
    layer("tanh", "TanH", "data", "tanh"),
    layer("elu", "ELU", "data", "elu", "elu_param { alpha: 0.5 }"),
    layer("abs", "AbsVal", "data", "abs"),
    layer("bnll", "BNLL", "data", "bnll"),
    layer("pow", "Power", "data", "pow", "power_param { power: 2 scale: 0.5 shift: 1 }"),
    layer("pow2", "Power", "abs", "pow2", "power_param { power: 1.5 scale: 2 shift: 0.1 }"),
    layer("drop", "Dropout", "pow2", "pow2"),
    layer("drop2", "Dropout", "elu", "drop2"),
    layer("prelu", "PReLU", "data", "prelu"),
    layer("prelu1", "PReLU", "data", "prelu1", "prelu_param { channel_shared: true }"),
    layer("clip", "Clip", "data", "clip", "clip_param { min: -0.5 max: 0.7 }"),
    layer("sum", "Eltwise", ["sig", "tanh"], "sum", "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }"),
    layer("sum_relu", "ReLU", "sum", "sum"),
    layer("prod", "Eltwise", ["elu", "bnll", "pow"], "prod", "eltwise_param { operation: PROD }"),
    layer("max", "Eltwise", ["prelu", "prelu1", "clip"], "max", "eltwise_param { operation: MAX }"),
    layer("cat", "Concat", ["sum", "prod", "max"], "cat"),
    layer("bn", "BatchNorm", "cat", "cat", "batch_norm_param { eps: 0.01 }"),
    layer("bn_sc", "Scale", "cat", "cat"),
    layer("bn_b", "Bias", "cat", "cat"),
    layer("cat2", "Concat", ["pow2", "drop2"], "cat2", "concat_param { axis: 3 }"),
    layer("sl", "Slice", "cat", ["s0", "s1", "s2"], "slice_param { axis: 1 slice_point: 2 slice_point: 5 }"),
    layer("sp", "Split", "s1", ["sp0", "sp1"]),
    layer("fl", "Flatten", "sp0", "fl"),
    layer("rs", "Reshape", "sp1", "rs", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"),
    layer("sm", "Softmax", "s2", "sm"),
    layer("sm2", "Softmax", "rs", "sm2", "softmax_param { axis: 2 }"),
    layer("crop", "Crop", ["cat", "sm"], "crop", "crop_param { axis: 2 offset: 0 }"),
    layer("small", "Pooling", "cat", "small", "pooling_param { pool: MAX kernel_size: 2 }"),
    layer("crop2", "Crop", ["cat", "small"], "crop2", "crop_param { axis: 2 offset: 1 offset: 1 }"),
    layer("perm", "Permute", "cat", "perm", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    layer("shuf", "ShuffleChannel", "cat", "shuf", "shuffle_channel_param { group: 3 }"),
    layer("l2", "Normalize", "cat", "l2", "norm_param { across_spatial: true }"),
    layer("l2c", "Normalize", "cat", "l2c", "norm_param { across_spatial: false channel_shared: false }"),
    layer("gate", "InnerProduct", "fl", "gate", "inner_product_param { num_output: 18 }"),
    layer("gate2", "Reshape", "gate", "gate2", "reshape_param { shape { dim: 0 dim: 0 } }"),
    layer("gated", "Scale", ["cat", "gate2"], "gated", "scale_param { axis: 0 bias_term: true }"),
    layer("shift", "InnerProduct", "fl", "shift", "inner_product_param { num_output: 18 }"),
    layer("shifted", "Bias", ["shuf", "shift"], "shifted", "bias_param { axis: 0 }"),
])

RESIDUAL_NET = inp(2, 8, 9, 9) + "".join([
    # identity block: conv + BN + Scale, then the add (in place on the conv's output) and ReLU
    layer("a1", "Convolution", "data", "a1", "convolution_param { num_output: 8 kernel_size: 1 }"),
    layer("a1_bn", "BatchNorm", "a1", "a1"),
    layer("a1_sc", "Scale", "a1", "a1", "scale_param { bias_term: true }"),
    layer("add1", "Eltwise", ["a1", "data"], "add1"),
    layer("relu1", "ReLU", "add1", "add1"),
    # projection block: the shortcut conv runs last, so it is the one that does the add
    layer("b1", "Convolution", "add1", "b1", "convolution_param { num_output: 12 kernel_size: 3 stride: 2 pad: 1 }"),
    layer("b1_relu", "ReLU", "b1", "b1"),
    layer("proj", "Convolution", "add1", "proj", "convolution_param { num_output: 12 kernel_size: 1 stride: 2 }"),
    layer("add2", "Eltwise", ["b1", "proj"], "add2", "eltwise_param { coeff: 0.5 coeff: -2 }"),
    layer("tanh2", "TanH", "add2", "add2"),
    # an add whose first operand lives on (not in place), three operands, then MAX and PROD
    layer("c0", "Convolution", "add2", "c0", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("c1", "Convolution", "add2", "c1", "convolution_param { num_output: 12 kernel_size: 3 pad: 1 }"),
    layer("add3", "Eltwise", ["add2", "c0", "c1"], "add3"),
    layer("d1", "Convolution", "add3", "d1", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("max4", "Eltwise", ["d1", "add2"], "max4", "eltwise_param { operation: MAX }"),
    layer("e1", "Convolution", "max4", "e1", "convolution_param { num_output: 12 kernel_size: 1 }"),
    layer("prod5", "Eltwise", ["add3", "e1"], "prod5", "eltwise_param { operation: PROD }"),
])
