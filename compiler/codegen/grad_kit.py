"""numba kernels the layers' backward rules share: col2im / im2col (convolution's gradient as a
GEMM, numpy's sgemm, plus these scatters and gathers) and the pooling scatters. Compiled on
first use; the layers import this only inside their `backward`."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=False)
def col2im(cols, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """[C * KH * KW, OH * OW] columns summed back into a [C, H, W] image (the adjoint of im2col)."""
    out = np.zeros((C, H, W), np.float32)
    for c in prange(C):
        for kh in range(KH):
            for kw in range(KW):
                row = (c * KH + kh) * KW + kw
                for oh in range(OH):
                    ih = oh * SH - PH + kh * DH
                    if ih < 0 or ih >= H:
                        continue
                    for ow in range(OW):
                        iw = ow * SW - PW + kw * DW
                        if 0 <= iw < W:
                            out[c, ih, iw] += cols[row, oh * OW + ow]
    return out


@njit(parallel=True, cache=False)
def im2col(x, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """[C, H, W] -> [C * KH * KW, OH * OW] patches (zero outside the image)."""
    C, H, W = x.shape
    cols = np.zeros((C * KH * KW, OH * OW), np.float32)
    for c in prange(C):
        for kh in range(KH):
            for kw in range(KW):
                row = (c * KH + kh) * KW + kw
                for oh in range(OH):
                    ih = oh * SH - PH + kh * DH
                    if ih < 0 or ih >= H:
                        continue
                    for ow in range(OW):
                        iw = ow * SW - PW + kw * DW
                        if 0 <= iw < W:
                            cols[row, oh * OW + ow] = x[c, ih, iw]
    return cols


@njit(parallel=True, cache=False)
def max_pool_back(x, dy, KH, KW, SH, SW, PH, PW):
    """Each output's gradient to its window's first largest input (Caffe's windows, clipped to
    the input; strictly greater replaces, as pooling_layer.cpp)."""
    R, H, W = x.shape
    _, OH, OW = dy.shape
    dx = np.zeros((R, H, W), np.float32)
    for r in prange(R):
        for oh in range(OH):
            h0, h1 = max(oh * SH - PH, 0), min(oh * SH - PH + KH, H)
            for ow in range(OW):
                w0, w1 = max(ow * SW - PW, 0), min(ow * SW - PW + KW, W)
                m = np.float32(-3.4028234663852886e38)
                at_h, at_w = -1, -1
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        if x[r, ih, iw] > m:
                            m = x[r, ih, iw]
                            at_h, at_w = ih, iw
                if at_h >= 0:
                    dx[r, at_h, at_w] += dy[r, oh, ow]
    return dx


@njit(parallel=True, cache=False)
def ave_pool_back(dy, H, W, KH, KW, SH, SW, PH, PW, exclude):
    """Each output's gradient spread over its window's inputs, divided as the forward divides
    (Caffe: the window clipped to H + pad; `exclude`: the taps inside the input)."""
    R, OH, OW = dy.shape
    dx = np.zeros((R, H, W), np.float32)
    for r in prange(R):
        for oh in range(OH):
            hs = oh * SH - PH
            he = min(hs + KH, H + PH)
            h0, h1 = max(hs, 0), min(he, H)
            for ow in range(OW):
                ws = ow * SW - PW
                we = min(ws + KW, W + PW)
                w0, w1 = max(ws, 0), min(we, W)
                n = (h1 - h0) * (w1 - w0) if exclude else (he - hs) * (we - ws)
                g = dy[r, oh, ow] / np.float32(n)
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        dx[r, ih, iw] += g
    return dx


@njit(parallel=True, cache=False)
def grouped_one_back(dy, w, C, H, W, SH, SW, PH, PW, DH, DW):
    """dx of a convolution whose C groups each read one input channel (depthwise, any channel
    multiplier M = O / C): per (image, channel), each of its M kernels' taps times dy, scattered
    back, tap by tap so the innermost loop runs along a row without a bounds test. A GEMM per
    group would be thousands of tiny calls."""
    N, O, OH, OW = dy.shape
    M = O // C
    KH, KW = w.shape[2], w.shape[3]
    dx = np.zeros((N, C, H, W), np.float32)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for m in range(M):
            o = c * M + m
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[o, 0, kh, kw]
                    off = kw * DW - PW                 # iw = ow * SW + off
                    ow0 = max(0, -(off // SW)) if off < 0 else 0
                    while ow0 * SW + off < 0:
                        ow0 += 1
                    ow1 = OW
                    while ow1 > ow0 and (ow1 - 1) * SW + off >= W:
                        ow1 -= 1
                    for oh in range(OH):
                        ih = oh * SH - PH + kh * DH
                        if ih < 0 or ih >= H:
                            continue
                        for ow in range(ow0, ow1):     # no branch: the loop vectorizes
                            dx[n, c, ih, ow * SW + off] += wv * dy[n, o, oh, ow]
    return dx
