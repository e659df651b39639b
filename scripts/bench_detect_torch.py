"""PyTorch side of `gpl bench detect`'s detector: stdlib/detectors.gpl's `ssd_lite` written in
PyTorch layer for layer (the MobileNet backbone with depthwise convolutions through `groups`,
batchnorm with Keras's eps 1e-3 and momentum 0.99, relu6, TensorFlow's 'same' padding, the
four levels' depthwise + pointwise class and box heads, each output the concatenation of the
levels' maps flattened in gpl's NHWC order), random weights, on CPU with N threads, kept warm
in one process so gpl and PyTorch alternate round by round. One command per line on stdin,
one JSON line per answer:

  describe               -> {"outputs": [class width, box width] per image, "params": trainable count}
  infer BATCH SECONDS    -> forward passes (eval mode, no grad) for at least SECONDS: {"rate": images/s}
  train BATCH SECONDS    -> training steps likewise: sigmoid focal loss (alpha 0.25, gamma 2) on
                            the class logits of the non-ignored anchors plus smooth-L1 (BETA) on
                            the positive anchors' box offsets, both over the positives, Adam
  quit

Usage: bench_detect_torch.py THREADS CLASSES SIZE ALPHA ANCHORS BETA"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from bench_torch import rate


def width(channels, alpha):
    """gpl's `width(channels, alpha)`: Keras's MobileNet rounding to a multiple of 8."""
    scaled = channels * alpha
    rounded = max(int(scaled + 4) // 8 * 8, 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return rounded


class TfPad(nn.Module):
    """TensorFlow's 'same' padding for a strided convolution: the odd row and column go after."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        def total(n):
            return max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)

        ph, pw = total(x.shape[2]), total(x.shape[3])
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def conv(cin, cout, kernel, stride=1, groups=1):
    """gpl's `conv ... same` (with its bias): symmetric padding at stride 1, F.pad at stride 2."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups)
    return nn.Sequential(TfPad(kernel, stride), nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups))


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


def separable(cin, cout, stride=1):
    """stdlib's depthwise_separable / separable_tap."""
    return nn.Sequential(
        conv(cin, cin, 3, stride, groups=cin), bn(cin), nn.ReLU6(),
        conv(cin, cout, 1), bn(cout), nn.ReLU6())


class SsdLite(nn.Module):
    def __init__(self, classes, alpha, anchors):
        super().__init__()
        w = lambda c: width(c, alpha)  # noqa: E731
        self.body = nn.Sequential(
            conv(3, w(32), 3, 2), bn(w(32)), nn.ReLU6(),
            separable(w(32), w(64)),
            separable(w(64), w(128), 2),
            separable(w(128), w(128)))
        self.c3 = separable(w(128), w(256), 2)
        self.c4 = separable(w(256), w(512), 2)
        self.c5 = separable(w(512), w(256), 2)
        self.c6 = separable(w(256), w(128), 2)
        levels = [w(256), w(512), w(256), w(128)]

        def head(out):
            return nn.ModuleList(
                nn.Sequential(conv(c, c, 3, groups=c), conv(c, anchors * out, 1)) for c in levels)

        self.cls, self.box = head(classes), head(4)

    def forward(self, x):
        c3 = self.c3(self.body(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        c6 = self.c6(c5)
        maps = [c3, c4, c5, c6]

        def join(heads):
            # gpl flattens NHWC maps: (y, x, channel) per image.
            return torch.cat([h(m).permute(0, 2, 3, 1).flatten(1) for h, m in zip(heads, maps)], 1)

        return join(self.cls), join(self.box)


def main():
    threads, classes, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    alpha, anchors, beta = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SsdLite(classes, alpha, anchors)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    batches = {}

    def data(n):
        """Images and random targets for batch `n`: per anchor 1% positive (a random class),
        4% ignored, the rest background, as gpl's side draws them."""
        if n not in batches:
            x = torch.rand(n, 3, size, size)
            with torch.no_grad():
                model.eval()
                cls, _ = model(x)
            count = cls.shape[1] // classes
            u = torch.rand(n, count)
            labels = torch.where(u < 0.01, torch.randint(1, classes + 1, (n, count)), torch.zeros(n, count, dtype=torch.long))
            labels = torch.where((u >= 0.01) & (u < 0.05), torch.full_like(labels, -1), labels)
            onehot = F.one_hot(labels.clamp(min=0), classes + 1)[..., 1:].float()
            boxes = torch.rand(n, count, 4) * 2 - 1
            batches[n] = (x, labels, onehot, boxes)
        return batches[n]

    def infer(n):
        x = data(n)[0]

        def run():
            model.eval()
            with torch.no_grad():
                model(x)
        return run

    def train(n):
        x, labels, onehot, boxes = data(n)
        valid, positive = labels >= 0, labels > 0
        positives = max(1, int(positive.sum()))

        def run():
            model.train()
            opt.zero_grad(set_to_none=True)
            cls, box = model(x)
            cls, box = cls.view(n, -1, classes), box.view(n, -1, 4)
            loss = sigmoid_focal_loss(cls[valid], onehot[valid], alpha=0.25, gamma=2.0, reduction="sum")
            loss = loss + F.smooth_l1_loss(box[positive], boxes[positive], beta=beta, reduction="sum")
            (loss / positives).backward()
            opt.step()
        return run

    work = {}
    for line in sys.stdin:
        parts = line.split()
        if parts == ["quit"]:
            break
        if parts == ["describe"]:
            model.eval()
            with torch.no_grad():
                outputs = [t.shape[1] for t in model(torch.zeros(1, 3, size, size))]
            params = sum(p.numel() for p in model.parameters())
            print(json.dumps({"outputs": outputs, "params": params, "torch": torch.__version__}), flush=True)
            continue
        what, n, seconds = parts[0], int(parts[1]), float(parts[2])
        # Two untimed calls the first time only, as gpl's side warms up once.
        warm_up = 0 if (what, n) in work else 2
        if (what, n) not in work:
            work[(what, n)] = {"infer": infer, "train": train}[what](n)
        print(json.dumps({"rate": rate(work[(what, n)], n, seconds, warm_up)}), flush=True)


if __name__ == "__main__":
    main()
