"""PyTorch side of `gpl bench explain`, kept warm in one process so gpl and PyTorch can
alternate round by round. Reads one command per line on stdin and answers one JSON line:

  gradcam   -> Grad-CAM of IMAGES images of the report's bigger CNN at its last conv layer,
               by pytorch-grad-cam's GradCAM (the library astronomers use), target = the
               predicted class; {"seconds": ...}
  filters   -> FILTERS filters of conv2d_3 by STEPS steps of gradient ascent from grey plus
               noise (normalised gradient, the loop of Chollet's filter visualisation);
               {"seconds": ...}
  quit

Usage: bench_explain_torch.py THREADS IMAGES FILTERS STEPS
"""
import json
import sys
import time

import torch

from bench_torch import bigger_cnn  # the same net `gpl bench engine` measures


def main():
    threads, images, filters, steps = (int(a) for a in sys.argv[1:5])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from pytorch_grad_cam import GradCAM

    model = bigger_cnn().eval()
    x = torch.rand(images, 3, 69, 69)
    last_conv_relu = model[13]  # conv2d_4's ReLU: Keras's conv2d_4 output
    cam = GradCAM(model=model, target_layers=[last_conv_relu])
    trunk = model[:10]  # up to conv2d_3's ReLU

    def gradcam():
        # pytorch-grad-cam batches the whole input; targets=None explains the predicted class.
        cam(input_tensor=x, targets=None)

    def ascent():
        g = torch.Generator().manual_seed(1)
        img = (0.5 + 0.1 * torch.randn(filters, 3, 69, 69, generator=g)).requires_grad_(True)
        for _ in range(steps):
            out = trunk(img)
            objective = out[torch.arange(filters), torch.arange(filters)].mean(dim=(1, 2)).sum()
            (grad,) = torch.autograd.grad(objective, img)
            with torch.no_grad():
                rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-8
                img += 0.02 * grad / rms
                img.clamp_(0.0, 1.0)

    work = {"gradcam": gradcam, "filters": ascent}
    gradcam()  # warm-up: allocators, hooks, thread pool
    ascent()
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        start = time.perf_counter()
        work[command]()
        print(json.dumps({"seconds": time.perf_counter() - start, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
