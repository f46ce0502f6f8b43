"""Train a captioner: `python train_space.py --help`.

Defaults are the Flickr8k / ImageNet-ResNet50 recipe; `--dataset scenes` generates and trains
the small demonstration model bundled in weights/, `--dataset scenes-v2` the richer scene world
(docs/worlds.md). Runs unchanged under `accelerate launch`.
"""

from captioner.training import main

if __name__ == "__main__":
    main()
