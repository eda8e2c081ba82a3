"""Image preprocessing as each model was trained: Caffe's DataTransformer for Caffe models (BGR,
0-255, mean per channel or a mean.binaryproto image, scale), torchvision's normalization for the
torchvision-defined zoo models (RGB, /255, mean, std), the command line's changes, checked on
images whose every pixel is known (no resampling, so the expected values need no Pillow)."""
from __future__ import annotations

import numpy as np
from PIL import Image

import netc
from netc.cli import main
from netc.runtime.images import Preprocess, load_images

import caffe_proto

TV_MEAN, TV_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def picture(tmp_path, w, h, name="p.png", mode="RGB"):
    rng = np.random.default_rng(w * h)
    pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(pixels, mode).save(path)            # PNG: lossless, the pixels come back exact
    return str(path), pixels.astype(np.float64)


def source_attrs(model):
    net = netc.load(model)
    return next(net.graph.nodes[n]["attrs"] for n in net.graph.nodes if net.graph.nodes[n]["type"] == "Input")


def test_caffe_models_get_bgr_minus_the_imagenet_mean(tmp_path):
    path, rgb = picture(tmp_path, 227, 227)
    got = load_images([path], (1, 3, 227, 227), source_attrs("alexnet"))[0]
    want = rgb[:, :, ::-1].transpose(2, 0, 1) - np.array([104, 117, 123]).reshape(3, 1, 1)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_torchvision_models_get_rgb_over_255_mean_and_std(tmp_path):
    path, rgb = picture(tmp_path, 224, 224)
    got = load_images([path], (1, 3, 224, 224), source_attrs("resnet18"))[0]
    want = (rgb / 255 - TV_MEAN).transpose(2, 0, 1) / TV_STD.reshape(3, 1, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_lenet_scales_gray_by_a_256th(tmp_path):
    path, gray = picture(tmp_path, 28, 28, mode="L")
    got = load_images([path], (1, 1, 28, 28), source_attrs("lenet"))[0, 0]
    np.testing.assert_allclose(got, gray * 0.00390625, atol=1e-6)


def test_every_zoo_model_says_how_it_was_trained():
    for model in netc.compiler.network.zoo_names():
        prep = Preprocess.of(source_attrs(model))
        assert (prep.color_order, prep.pixel_scale != 1) in {("BGR", False), ("RGB", True)}, model
        assert any(prep.mean) or prep.scale != 1, model


def test_center_crop_takes_the_middle(tmp_path):
    path, rgb = picture(tmp_path, 240, 230)
    prep = Preprocess(color_order="RGB", resize=(230, 240))        # no resampling: the crop alone
    got = load_images([path], (1, 3, 224, 224), prep)[0]
    np.testing.assert_array_equal(got, rgb[3:227, 8:232].transpose(2, 0, 1))


def test_a_caffe_mean_file_is_the_mean_image(tmp_path):
    """Caffe's ImageNet recipe: images stored at the mean image's size (256x256), the crop from
    its middle, the mean image's middle subtracted."""
    mean = np.random.default_rng(4).uniform(90, 130, (1, 3, 256, 256)).astype(np.float32)
    net = caffe_proto.messages()["BlobProto"]()
    net.shape.dim.extend(mean.shape)
    net.data.extend(mean.ravel().tolist())
    mean_file = tmp_path / "imagenet_mean.binaryproto"
    mean_file.write_bytes(net.SerializeToString())
    path, rgb = picture(tmp_path, 256, 256)
    ns = type("Args", (), dict(mean=str(mean_file), std=None, scale=None, pixels=None, channels=None,
                               resize=None, crop=None))
    from netc.cli.run import preprocessing
    prep = preprocessing(ns, source_attrs("alexnet"))
    got = load_images([path], (1, 3, 227, 227), prep)[0]
    want = rgb[14:241, 14:241, ::-1].transpose(2, 0, 1) - mean[0][:, 14:241, 14:241]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert "minus the mean image" in prep.describe((1, 3, 227, 227))


def test_run_says_what_it_applies_and_takes_changes(tmp_path, capsys):
    path, _ = picture(tmp_path, 300, 260, "cat.png")
    assert main(["run", "resnet18", "--input", path, "--top", "1"]) == 0
    err = capsys.readouterr().err
    assert ("note: preprocessing: resize to cover 224x224 keeping the aspect, center crop 224x224, RGB, "
            "x 0.00392157, minus mean [0.485, 0.456, 0.406], divided by std [0.229, 0.224, 0.225]") in err
    assert main(["run", "resnet18", "--input", path, "--top", "1", "--channels", "bgr", "--pixels", "0-255",
                 "--mean", "104,117,123", "--std", "1,1,1", "--resize", "256"]) == 0
    assert "resize to shorter side 256, center crop 224x224, BGR, minus mean [104, 117, 123]" in capsys.readouterr().err
    for bad, message in ((["--mean", "1,x"], "--mean takes comma-separated numbers"),
                         (["--resize", "0x9"], "--resize takes S or HxW"),
                         (["--std", "0,1,1"], "--std values must be positive"),
                         (["--mean", "1,2"], "2 mean value(s) for 3 channels")):
        assert main(["run", "resnet18", "--input", path, *bad]) == 2
        assert message in capsys.readouterr().err


def test_preprocessing_survives_conversion(tmp_path):
    net = netc.load("resnet18")
    again = netc.compiler.network.loads(net.to_net(), path="r.net")
    assert again.graph.nodes["data"]["attrs"] == net.graph.nodes["data"]["attrs"]
    proto = net.to_prototxt()
    assert "# netc: preprocess std_value=[0.229,0.224,0.225] color_order=RGB" in proto  # Caffe has no such fields
    back = netc.compiler.network.loads(proto, path="r.prototxt").graph.nodes["data"]["attrs"]
    assert back == net.graph.nodes["data"]["attrs"]
