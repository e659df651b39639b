"""SEP's side of `gpl bench detect`: kept warm, it times SEP on the images gpl wrote.

Usage: bench_extract_sep.py THRESH MINAREA IMAGE.npy...
Each line `run` on stdin times, over all images in turn, what gpl's side does:
sep.Background(data) (64x64 boxes, 3x3 filter), data - bkg, then
sep.extract(sub, THRESH, err=bkg.globalrms, minarea=MINAREA) with SEP's defaults; it answers
one JSON line {"seconds": total, "objects": [count per image]}. `quit` ends it.
"""
import json
import sys
import time

import numpy as np
import sep


def main():
    thresh, minarea = float(sys.argv[1]), int(sys.argv[2])
    images = [np.ascontiguousarray(np.load(p).astype(np.float32)) for p in sys.argv[3:]]
    sep.set_extract_pixstack(10_000_000)

    def run():
        counts = []
        start = time.perf_counter()
        for data in images:
            bkg = sep.Background(data)
            sub = data - bkg.back()
            objs = sep.extract(sub, thresh, err=bkg.globalrms, minarea=minarea)
            counts.append(len(objs))
        return time.perf_counter() - start, counts

    run()  # warm-up
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        seconds, counts = run()
        print(json.dumps({"seconds": seconds, "objects": counts}), flush=True)


if __name__ == "__main__":
    main()
