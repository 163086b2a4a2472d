"""A curate filter in one file: drop samples whose image is smaller than a minimum side.

    curate filter mix.json -o big.json --image-root data/ --filter min-side=224

A filter is a :class:`curate.Filter` with a name and ``decide(item)``: None keeps the sample,
a dict removes it (the dict says why, in the removed list). ``configure`` takes the value of
``--filter NAME=VALUE``. ``self.context.images`` reads image sizes (from their headers, under
``--image-root``, with curate's safety rules).
"""

import curate
from curate.images import UnreadableImage


class MinSide(curate.Filter):
    name = "min-side"
    description = "drop samples whose image's shorter side is under N pixels (min-side=N, default 64)"
    minimum = 64

    def configure(self, value: str) -> None:
        if not value.isdigit() or int(value) < 1:
            raise curate.CurateError(f"min-side: {value!r} is not a number of pixels (min-side=224)")
        self.minimum = int(value)

    def decide(self, item):
        for image in item.sample.images:
            try:
                width, height = self.context.images.size(image)
            except UnreadableImage:
                continue                  # not this filter's question: the image's size is
            if min(width, height) < self.minimum:
                return {"reason": f"{width}x{height} pixels: a side under {self.minimum}"}
        return None


@curate.hookimpl
def register_filters(register):
    register(MinSide)
