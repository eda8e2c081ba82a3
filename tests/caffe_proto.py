"""An encoder for .caffemodel files that shares nothing with netc's reader: protobuf's own
serializer, over message types built here with caffe.proto's field numbers (BVLC caffe.proto:
NetParameter name 1, layers 2, layer 100; LayerParameter name 1, type 2, bottom 3, top 4, blobs 7;
V1LayerParameter bottom 2, top 3, name 4, type 5, blobs 6; BlobProto shape 7, data 5, diff 6,
double_data 8, num 1, channels 2, height 3, width 4; BlobShape dim 1), no protoc needed."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
_KIND = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "float": F.TYPE_FLOAT,
         "double": F.TYPE_DOUBLE}


@lru_cache(maxsize=2)
def messages(packed: bool = True) -> dict:
    """Message classes; `packed=False` writes repeated numbers one field each (valid protobuf
    that old writers produce)."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"caffe_oracle_{int(packed)}.proto",
                                             package=f"oracle{int(packed)}", syntax="proto2")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, kind, repeated in fields:
            f = m.field.add(name=fname, number=number,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if kind in _KIND:
                f.type = _KIND[kind]
                if repeated and kind != "string":
                    f.options.packed = packed
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".{fdp.package}.{kind}"
    message("BlobShape", [("dim", 1, "int64", True)])
    message("BlobProto", [("shape", 7, "BlobShape", False), ("data", 5, "float", True), ("diff", 6, "float", True),
                          ("double_data", 8, "double", True), ("num", 1, "int32", False),
                          ("channels", 2, "int32", False), ("height", 3, "int32", False), ("width", 4, "int32", False)])
    message("LayerParameter", [("name", 1, "string", False), ("type", 2, "string", False),
                               ("bottom", 3, "string", True), ("top", 4, "string", True),
                               ("blobs", 7, "BlobProto", True)])
    message("V1LayerParameter", [("bottom", 2, "string", True), ("top", 3, "string", True),
                                 ("name", 4, "string", False), ("type", 5, "int32", False),
                                 ("blobs", 6, "BlobProto", True)])
    message("NetParameter", [("name", 1, "string", False), ("layers", 2, "V1LayerParameter", True),
                             ("layer", 100, "LayerParameter", True)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{fdp.package}.{n}"))
            for n in ("BlobShape", "BlobProto", "LayerParameter", "V1LayerParameter", "NetParameter")}


V1_ENUM = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39, "ReLU": 18, "Pooling": 17, "Data": 5}


def caffemodel(layers, *, v1=False, legacy_shape=False, double=False, packed=True, name="net") -> bytes:
    """`layers`: (name, type, [arrays]) -> the bytes of a .caffemodel."""
    m = messages(packed)
    net = m["NetParameter"](name=name)
    for lname, ltype, blobs in layers:
        layer = net.layers.add(name=lname, type=V1_ENUM[ltype]) if v1 else net.layer.add(name=lname, type=ltype)
        for b in blobs:
            b = np.asarray(b)
            proto = layer.blobs.add()
            if legacy_shape:
                dims = (1,) * (4 - b.ndim) + b.shape
                proto.num, proto.channels, proto.height, proto.width = (int(d) for d in dims)
            else:
                proto.shape.dim.extend(int(d) for d in b.shape)
            if double:
                proto.double_data.extend(b.astype(np.float64).ravel().tolist())
            else:
                proto.data.extend(b.astype(np.float32).ravel().tolist())
            proto.diff.extend([0.5] * min(b.size, 3))          # a training snapshot's diffs: skipped
    return net.SerializeToString()


def parse(data: bytes) -> dict:
    """name -> (type, [arrays]) of a .caffemodel, through protobuf's parser."""
    net = messages(True)["NetParameter"]()
    net.ParseFromString(data)
    out = {}
    for layer in net.layer:
        out[layer.name] = (layer.type, [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in layer.blobs])
    return out
