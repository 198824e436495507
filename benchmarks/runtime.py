"""The Watson paper's runtime experiment: our losses vs. their peers, timed in the same run.

    python benchmarks/runtime.py                 # all losses, RGB and LA, 128 x C x 64 x 64
    python benchmarks/runtime.py --memory        # also peak memory (subprocess per case on CPU)
    python benchmarks/runtime.py --original ../PerceptualSimilarity   # also the paper's own code

Same as ``genloss bench``; see genloss/experiments/runtime.py for what is measured.
"""

import sys

from genloss.experiments.runtime import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
