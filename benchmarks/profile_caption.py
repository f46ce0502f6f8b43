"""Where the time of one caption goes: pyinstrument over the app's caption path.

    .venv/bin/pip install pyinstrument        # not a project dependency
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_caption.py --model resnet50 --beam 3
    .venv/bin/python benchmarks/profile_caption.py --model bundled --what throughput

Writes benchmarks/results/profile-<model>-<what>-beam<k>.txt (the call tree, times in seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine, machine_line  # noqa: E402
from benchmarks.inference import EXAMPLES, MAX_LEN, load_models  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=["bundled", "resnet50"])
    parser.add_argument("--what", default="caption", choices=["caption", "view", "throughput"],
                        help="caption: Demo.caption on one image; view: Demo.view (the app's "
                             "handler: also opens the file and builds the browser's payload); "
                             "throughput: caption_images on 32 images at batch 32")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--baseline", metavar="REV", help="profile decoding.py as it was at "
                        "this git revision (e.g. 723d89e)")
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("pip install pyinstrument first") from None
    from captioner.decoding import caption_images
    from captioner.preprocess import load_image

    demo, image, desc, _ = load_models([args.model])[args.model]
    if args.baseline:
        import captioner.demo.core
        from benchmarks.compare import module_at

        old_decoding = module_at(args.baseline, "captioner/decoding.py", "baseline_decoding")
        captioner.demo.core.caption_images = caption_images = old_decoding.caption_images
        desc += f" [decoding at {args.baseline}]"
    if args.what == "caption":
        picture = load_image(image)

        def run():
            demo.caption(picture, args.beam, MAX_LEN)
    elif args.what == "view":
        def run():
            demo.view(str(image), args.beam, MAX_LEN)
    else:
        files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
        images = [load_image(files[i % len(files)]) for i in range(32)]

        def run():
            caption_images(demo.model, images, beam_size=args.beam, max_len=MAX_LEN,
                           batch_size=32)
    run()  # warm-up
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(args.repeats):
        run()
    profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    m = machine()
    header = f"{desc}; {args.what}, beam {args.beam}, {args.repeats} runs\n{machine_line(m)}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"-at-{args.baseline}" if args.baseline else ""
    path = RESULTS / f"profile-{args.model}-{args.what}-beam{args.beam}{tag}.txt"
    path.write_text(header + text)
    print(header + text)
    print(f"written {path}")


if __name__ == "__main__":
    main()
