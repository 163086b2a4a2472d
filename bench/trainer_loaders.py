"""curate's output through the trainers' own data loaders (issue #23, item 6), as a user would
run them: not a test (the trainers and their dependencies are not curate's), a check to rerun
when a writer changes.

    python bench/trainer_loaders.py --llama-factory LLaMA-Factory/src --qwen-vl-finetune Qwen3-VL/qwen-vl-finetune \
        --ms-swift ms-swift [--python-path DIR ...]

It converts the real LLaVA mix sample and SVIT mix from ``../shared/data/real`` and a
LLaVA-Video record set (a video, two images, one image) with curate, then in a subprocess
whose PYTHONPATH holds the trainer's checkout (and ``--python-path`` folders: the trainer's
dependencies, such as the ``datasets`` version it pins):

- LLaMA-Factory: its parser reads the ``dataset_info.json`` curate wrote, ``_load_single_dataset``
  loads the file with ``datasets`` and aligns it with its ShareGPT converter, and its
  ``mm_plugin`` checks every record's ``<image>``/``<video>`` tags (``_validate_messages``);
- qwen-vl-finetune: ``data_processor._build_messages`` places every tag of every record;
- ms-swift: ``swift.dataset.load_dataset`` loads the file (``datasets`` and its
  ``MessagesPreprocessor``), then ``Template._add_default_tags`` (its tag rule) runs on each
  record's ``StdTemplateInputs``, after which the tags must match the media. Also Parquet
  (OneVision, the_cauldron and FineVision shaped, from ``fixtures/make_hf_datasets.py``) two
  ways: ``--to hf-parquet`` (the folder, images embedded) and ``--to ms-swift
  --extract-images DIR``; each image opened by ``Template._load_image``, the template's own.

Each prints how many records passed; a failure prints the trainer's own traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared")) / "data" / "real"
IMAGES = ROOT / "fixtures" / "images"

VIDEO_SET = [
    {"id": "v1", "video": "academic_source/ytb_1.mp4",
     "conversations": [{"from": "human", "value": "<image>\nWhat happens?"}, {"from": "gpt", "value": "A dog runs."}]},
    {"id": "m1", "image": ["coco/train2017/000000000001.jpg", "coco/train2017/000000000002.jpg"],
     "conversations": [{"from": "human", "value": "<image>\n<image>\nWhat differs?"},
                       {"from": "gpt", "value": "The light."}]},
    {"id": "s1", "image": "coco/train2017/000000000003.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]},
]

LLAMA_FACTORY = """
import sys
from types import SimpleNamespace
import datasets
from llamafactory.data.loader import _load_single_dataset
from llamafactory.data.mm_plugin import get_mm_plugin
from llamafactory.data.parser import get_dataset_list
from llamafactory.hparams import DataArguments
folder, name, media = sys.argv[1:4]
attr = get_dataset_list([name], folder)[0]
data_args = DataArguments(dataset_dir=folder, media_dir=media)
model_args = SimpleNamespace(cache_dir=folder + "/.hf", hf_hub_token=None, ms_hub_token=None, om_hub_token=None)
training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0, seed=0)
dataset = _load_single_dataset(attr, model_args, data_args, training_args)
plugin = get_mm_plugin("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")
images = videos = 0
for row in dataset:
    plugin._validate_messages(row["_prompt"] + row["_response"], row["_images"] or [], row["_videos"] or [], [])
    images, videos = images + len(row["_images"] or []), videos + len(row["_videos"] or [])
print(f"LLaMA-Factory (datasets {datasets.__version__}): {name}: {len(dataset)} rows loaded, aligned and "
      f"validated ({images} images, {videos} videos)")
"""

QWEN = """
import json, sys
from pathlib import Path
from qwenvl.data.data_processor import _build_messages
path, root = Path(sys.argv[1]), Path(sys.argv[2])
records = json.loads(path.read_text())
placed = sum(1 for r in records for m in _build_messages(r, root) for c in m["content"] if c["type"] != "text")
print(f"qwen-vl-finetune: {path.name}: {len(records)} records built by _build_messages ({placed} media placed)")
"""

SWIFT = """
import os, re, sys
import datasets
from swift.dataset import load_dataset
from swift.template.base import Template
from swift.template.template_inputs import StdTemplateInputs
path = os.path.abspath(sys.argv[1])
if len(sys.argv) > 2:
    os.chdir(sys.argv[2])             # --extract-images DIR: the records' image paths are relative to it
train, _ = load_dataset([path], use_hf=True)
media = opened = 0
for row in train:
    inputs = StdTemplateInputs.from_dict(dict(row))
    Template._add_default_tags(inputs)
    text = "\\n".join(m["content"] or "" for m in inputs.messages)
    for kind in ("image", "video"):
        found, given = len(re.findall(f"<{kind}>", text)), len(getattr(inputs, kind + "s") or [])
        assert found == given, (row, kind, found, given)
        media += given
    if len(sys.argv) > 2 or path.endswith("_hf"):
        opened += len([Template._load_image(image, True).size for image in inputs.images])
print(f"ms-swift (datasets {datasets.__version__}): {sys.argv[1]}: {len(train)} rows loaded and tagged ({media} media"
      f"{f', {opened} images opened by Template._load_image' if opened else ''})")
"""


def curate(*args) -> None:
    subprocess.run([sys.executable, "-m", "curate", "convert", *map(str, args), "-q", "--on-error", "skip",
                    "--image-root", IMAGES], check=True)


def trainer(code: str, checkout: Path, extra: list[str], *args) -> bool:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), *extra]))
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    print(done.stdout.strip() if done.returncode == 0 else done.stderr.strip().splitlines()[-1])
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-factory", type=Path, help="LLaMA-Factory's src folder")
    parser.add_argument("--qwen-vl-finetune", type=Path, help="QwenLM's qwen-vl-finetune folder")
    parser.add_argument("--ms-swift", type=Path, help="ms-swift's checkout (the folder holding swift/)")
    parser.add_argument("--python-path", action="append", default=[], help="more folders for the trainers' PYTHONPATH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="curate-trainers-"))
    videos = work / "llava_video.json"
    videos.write_text(json.dumps(VIDEO_SET))
    inputs = {"mix": [REAL / "llava_v1_5_mix665k.every500.json"],
              "svit_and_mix": [ROOT / "fixtures" / "svit" / "referring_qa.json",
                               REAL / "svit_mix_665k_llava_format.every500.json"],
              "video": [videos]}
    ok = True
    for name, paths in inputs.items():
        if args.llama_factory:
            curate("auto", "llama-factory", *paths, "-o", work / f"{name}.json")
            ok &= trainer(LLAMA_FACTORY, args.llama_factory, args.python_path, work, name, IMAGES)
        if args.qwen_vl_finetune:
            curate("auto", "qwen-vl", *paths, "-o", work / f"{name}_qwen.json")
            ok &= trainer(QWEN, args.qwen_vl_finetune, args.python_path, work / f"{name}_qwen.json", IMAGES)
        if args.ms_swift:
            curate("auto", "ms-swift", *paths, "-o", work / f"{name}_swift.jsonl")
            ok &= trainer(SWIFT, args.ms_swift, args.python_path, work / f"{name}_swift.jsonl")
    if args.ms_swift:
        ok &= parquet_through_ms_swift(work, args)
    return 0 if ok else 1


def parquet_through_ms_swift(work: Path, args) -> bool:
    """Generated OneVision, the_cauldron and FineVision shards to hf-parquet (loaded as a folder)
    and to ms-swift JSONL with the images extracted, through ms-swift's loader."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    import make_hf_datasets as make
    hub = work / "hub"
    shards = [make.write_onevision(hub / "onevision" / "dvqa" / "train-00000-of-00001.parquet", 6).parent,
              make.write_cauldron(hub / "the_cauldron" / "ai2d" / "train-00000-of-00001.parquet", 5, seed=3).parent,
              make.write_cauldron(hub / "finevision" / "chartqa" / "train-00000-of-00001.parquet", 4, seed=5,
                                  ratings=True, images_per_row=2).parent]
    curate("auto", "hf-parquet", *shards, "-o", work / "parquet_hf")
    curate("auto", "ms-swift", *shards, "-o", work / "parquet_swift.jsonl", "--extract-images", work / "parquet_images")
    return (trainer(SWIFT, args.ms_swift, args.python_path, work / "parquet_hf")
            & trainer(SWIFT, args.ms_swift, args.python_path, work / "parquet_swift.jsonl", work / "parquet_images"))


if __name__ == "__main__":
    sys.exit(main())
