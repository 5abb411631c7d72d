"""A SAM whose weights are set by hand, so its answer is known: a click on a flat shape of the object colour returns
that shape, in the image's own coordinates. Random weights cannot test SAM's geometry (where a click lands, how masks
come back to the image); this model can, through Meta's unmodified ``segment_anything`` modules.

How it segments (every other weight is zero):

- image encoder: per 8x8 patch, a constant channel and a foreground channel, the patch's mean of R - (G+B)/2 scaled to
  1 on ``OBJECT_COLOUR`` and 0 on grey; the layer norms keep both (a constant dominates, so they stay monotone).
- prompt encoder: the positional encoding keeps six low frequencies (the rest are zero), and each token kind (IoU,
  mask, positive/negative point, box corners, padding) carries its own marker channel.
- two-way transformer, layer 0: self-attention leaves only positive points with a value; image-to-token attention
  compares every image location's position encoding with each positive point's, against a threshold held by the IoU
  token, so each location receives "near a click" (a disc of ``BLOB_RADIUS`` of the image side) or nothing.
- mask decoder: the upscaled features of a location are (constant, foreground, near-a-click); the hypernetworks'
  output is fixed and calibrated so the logit is positive exactly where a location is both foreground and near a
  click. The IoU head returns constants.

So a click selects the object-coloured region around it: the shape under the click, not another shape further away.
The coordinate transforms are what decide which shape that is (the click and the mask both go through SAM's resize
of the long side to ``img_size`` and its padding).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..models.sam import PIXEL_MEAN, PIXEL_STD, SamArch

#: The planted SAM's architecture: a 256 px encoder with 8 px patches (a 32x32 embedding, 128x128 low-res masks).
PLANTED_SAM_ARCH = SamArch(img_size=256, patch_size=8, embed_dim=16, depth=1, heads=1, global_attn_indexes=(0,),
                           window_size=0, mlp_ratio=1, prompt_dim=64, decoder_mlp_dim=16, decoder_heads=1,
                           iou_head_hidden_dim=16, mask_in_chans=4)
#: What the planted SAM segments: flat shapes of this colour (on a grey or other low-red background).
OBJECT_COLOUR = (220, 40, 40)
#: Radius of the region around a click in which object pixels are selected, as a fraction of the image's long side.
BLOB_RADIUS = 0.18

_N_FREQ, _FREQ = 6, 0.25  # positional-encoding frequencies kept (sin in 0..5, cos in 32..37), and their magnitude
_CONST, _FG, _NEAR, _QVAL = 12, 13, 25, 20  # channels that are 0 in every position encoding (sin of zero frequency)
_COS0 = 44  # cos of a zero frequency: 1 at every position
_M_IOU, _M_MASK, _M_POS, _M_NEG, _M_BOX0, _M_BOX1, _M_PAD = 14, 15, 19, 21, 22, 23, 24
_MARK = 30.0  # marker size: token self-attention is exactly diagonal (exp(-112) underflows)
_BETA = 400.0  # sharpness of the "near a click" decision


@torch.no_grad()
def build_planted_sam(calibrate: bool = True):
    """The planted ``segment_anything.Sam`` (eval mode, CPU, fp32). ``calibrate`` fits the mask read-out on a
    calibration scene (what makes the logit's sign "object and near a click")."""
    sam = PLANTED_SAM_ARCH.build()
    for p in sam.parameters():
        p.zero_()
    _plant_encoder(sam.image_encoder)
    _plant_prompts(sam.prompt_encoder)
    _plant_decoder(sam.mask_decoder)
    if calibrate:
        _calibrate(sam)
    return sam.eval()


def _plant_encoder(enc) -> None:
    c = torch.tensor([1.0, -0.5, -0.5])  # R - (G+B)/2
    scale = OBJECT_COLOUR[0] - (OBJECT_COLOUR[1] + OBJECT_COLOUR[2]) / 2
    w = enc.patch_embed.proj.weight  # (embed, 3, p, p); the input is (pixel - mean) / std
    w[1] = (c * torch.tensor(PIXEL_STD) / scale / (w.shape[-1] * w.shape[-2])).view(3, 1, 1)
    enc.patch_embed.proj.bias[1] = float((c * torch.tensor(PIXEL_MEAN)).sum()) / scale
    enc.patch_embed.proj.bias[0] = 1.0
    for blk in enc.blocks:  # attention and MLP outputs are zero: the blocks pass the patches through
        blk.norm1.weight.fill_(1)
        blk.norm2.weight.fill_(1)
    neck = enc.neck
    neck[0].weight[_CONST, 0] = 30.0  # a dominant constant: every layer norm after this is nearly affine
    neck[0].weight[_FG, 1] = 1.0
    neck[2].weight[[_CONST, _FG], [_CONST, _FG], 1, 1] = 1.0
    for norm in (neck[1], neck[3]):
        norm.weight[[_CONST, _FG]] = 1.0


def _plant_prompts(pe) -> None:
    g = pe.pe_layer.positional_encoding_gaussian_matrix  # a buffer, not a parameter: zeroed here
    g.zero_()
    angles = torch.arange(_N_FREQ) * math.pi / _N_FREQ
    g[0, :_N_FREQ] = _FREQ * torch.cos(angles)
    g[1, :_N_FREQ] = _FREQ * torch.sin(angles)
    for embedding, marker in ((pe.point_embeddings[0], _M_NEG), (pe.point_embeddings[1], _M_POS),
                              (pe.point_embeddings[2], _M_BOX0), (pe.point_embeddings[3], _M_BOX1),
                              (pe.not_a_point_embed, _M_PAD)):
        embedding.weight[0, marker] = _MARK


def _plant_decoder(dec) -> None:
    dec.iou_token.weight[0, _M_IOU] = _MARK
    for i in range(dec.mask_tokens.weight.shape[0]):
        dec.mask_tokens.weight[i, _M_MASK + i] = _MARK
    markers = [_M_IOU, *range(_M_MASK, _M_MASK + 4), _M_POS, _M_NEG, _M_BOX0, _M_BOX1, _M_PAD]
    layer0, layer1 = dec.transformer.layers
    sa = layer0.self_attn  # each token attends to itself; only a positive point has a value
    for m in markers:
        sa.q_proj.weight[m, m] = 1.0
        sa.k_proj.weight[m, m] = 1.0
    sa.v_proj.weight[0, _M_POS] = 1.0 / _MARK
    sa.out_proj.weight[_QVAL, 0] = 1.0
    for layer in (layer0, layer1):
        for norm in (layer.norm1, layer.norm2, layer.norm3):
            norm.weight[_QVAL] = 1.0
        layer.norm4.weight[[_CONST, _FG, _NEAR]] = 1.0
    dec.transformer.norm_final_attn.weight[_QVAL] = 1.0
    ca = layer0.cross_attn_image_to_token  # image locations attend to the tokens (internal width 32)
    root = math.sqrt(_BETA)
    for i, ch in enumerate([*range(_N_FREQ), *range(32, 32 + _N_FREQ)]):
        ca.q_proj.weight[i, ch] = root
        ca.k_proj.weight[i, ch] = root
    ca.q_proj.weight[2 * _N_FREQ, _COS0] = 1.0
    # the IoU token is the "not near" alternative: its score is the kernel's value at the blob radius
    # (position codes are 2*pi*(2p-1)@G, so a distance d in [0,1] units turns each phase by 4*pi*d*|G|)
    threshold = float(sum(math.cos(4 * math.pi * BLOB_RADIUS * _FREQ * math.cos(a)) for a in
                          np.linspace(0, math.pi, 64)) / 64 * _N_FREQ)
    ca.k_proj.weight[2 * _N_FREQ, _M_IOU] = _BETA * threshold / _MARK
    for m in [*range(_M_MASK, _M_MASK + 4), _M_NEG, _M_BOX0, _M_BOX1, _M_PAD]:
        ca.k_proj.weight[2 * _N_FREQ, m] = -1000.0 / _MARK
    ca.v_proj.weight[0, _QVAL] = 1.0
    ca.out_proj.weight[_NEAR, 0] = 0.1  # small beside the constant (see the encoder's neck)
    up1, norm, _, up2, _ = dec.output_upscaling  # nearest-neighbour x4 of (constant, foreground, near)
    for out, ch in enumerate((_CONST, _FG, _NEAR)):
        up1.weight[ch, out] = 1.0
        up2.weight[out, out] = 1.0
    norm.weight[:3] = 1.0
    norm.bias[:3] = 3.0  # into GELU's near-linear range
    dec.iou_prediction_head.layers[-1].bias[:] = torch.tensor([0.9, 0.95, 0.9, 0.85])


def _calibrate(sam) -> None:
    """Set the mask read-out (the hypernetworks' constant output) from a calibration scene with one clicked and one
    distant object: the upscaled features are nearly affine in "object" and "near a click" (the dominant constant
    keeps every layer norm in its linear range), so with each measured on its own 0-1 scale the logit is
    4 * (object + near - 1.3): positive where a location is near a click and at least 30% object (8 px patches)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = 192, 256
    image = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    near = (yy - 60) ** 2 + (xx - 70) ** 2 < 22 ** 2
    far = (yy - 140) ** 2 + (xx - 190) ** 2 < 22 ** 2
    image[near | far] = OBJECT_COLOUR
    captured = {}
    hook = sam.mask_decoder.output_upscaling.register_forward_hook(
        lambda module, args, out: captured.__setitem__("up", out[0, :3]))
    try:
        x = torch.as_tensor(ResizeLongestSide(sam.image_encoder.img_size).apply_image(image)).permute(2, 0, 1)
        emb = sam.image_encoder(sam.preprocess(x[None].float()))
        points = (torch.tensor([[[70.0, 60.0]]]), torch.ones(1, 1, dtype=torch.int))
        sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=None)
        sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    finally:
        hook.remove()
    const, fg, close = captured["up"]
    s = const.shape[-1] / sam.image_encoder.img_size  # low-res cells per input pixel (the image is not resized)
    cell = lambda y, x: (int(y * s), int(x * s))  # noqa: E731
    fg_lo, fg_hi = fg[cell(60, 130)], fg[cell(140, 190)]  # background / object, both away from the click
    near_lo, near_hi = close[cell(140, 190)], close[cell(60, 70)]  # far from / at the click
    a = 4.0
    h_fg, h_near = a / (fg_hi - fg_lo), a / (near_hi - near_lo)
    h_const = (-1.3 * a - h_fg * fg_lo - h_near * near_lo) / const[cell(60, 130)]
    for mlp in sam.mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].bias[:3] = torch.stack([h_const, h_fg, h_near])
