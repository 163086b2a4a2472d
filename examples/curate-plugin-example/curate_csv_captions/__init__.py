"""A complete curate plugin: the ``csv-captions`` format (columns ``id,image,caption``).

Reading turns each row into a one-question captioning Sample; writing keeps the
image and the first answer of each Sample.
"""

import csv
from pathlib import Path

import curate
from curate import Reader, RecordError, Writer

PROMPT = "<image>\nDescribe the image briefly."
COLUMNS = ("id", "image", "caption")


class CsvCaptionReader(Reader):
    name = "csv-captions"
    description = "CSV of id,image,caption rows (example plugin)"

    def sniff(self, path, head):
        first_line = head.splitlines()[0] if head else ""
        return 5 if Path(path).suffix == ".csv" and "caption" in first_line else 0

    def read(self, path, options):
        with open(path, newline="", encoding="utf-8") as f:
            for index, row in enumerate(csv.DictReader(f)):
                if not row.get("image") or not row.get("caption"):
                    options.reject(RecordError(path, "needs an image and a caption", index=index,
                                               record_id=row.get("id"), field="caption"), row)
                    continue
                yield curate.Sample(
                    id=row.get("id") or f"{Path(path).stem}_{index}",
                    image=row["image"],
                    conversations=[curate.Turn("human", PROMPT), curate.Turn("gpt", row["caption"])])


class CsvCaptionWriter(Writer):
    name = "csv-captions"
    description = "CSV of id,image,caption rows (example plugin)"

    def write(self, samples, stream, options):
        out = csv.writer(stream)
        out.writerow(COLUMNS)
        count = 0
        for index, sample in enumerate(samples):
            if not sample.images:
                options.reject(RecordError(options.path, "a caption row needs an image", index=index,
                                           record_id=sample.id, field="image"), None)
                continue
            answer = next((t.text for t in sample.conversations if t.role == "gpt"), "")
            out.writerow([sample.id, sample.images[0], answer])
            count += 1
        return count


@curate.hookimpl
def register_readers(register):
    register(CsvCaptionReader)


@curate.hookimpl
def register_writers(register):
    register(CsvCaptionWriter)
