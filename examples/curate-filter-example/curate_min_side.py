"""A curate filter in one file: drop samples whose image is smaller than a minimum side.

    curate filter mix.json -o big.json --image-root data/ --filter min-side=224

A filter is a :class:`curate.Filter` with a name and ``decide(item)``: None keeps the sample,
a dict removes it (the dict says why, in the removed list). Its ``settings`` are typed
:class:`curate.Setting` declarations: the first takes the value of ``--filter NAME=VALUE``
(here ``min-side=224``), each is also a flag (``--min-side-pixels 224``) and ``-O
min_side_pixels=224``, and ``self.values`` holds them parsed and checked.
``self.context.images`` reads image sizes (from their headers, under ``--image-root``, with
curate's safety rules).
"""

import curate


class MinSide(curate.Filter):
    name = "min-side"
    description = "drop samples whose image's shorter side is under N pixels (min-side=N, default 64)"
    settings = (curate.Setting("min_side_pixels", int, 64, minimum=1,
                               help="min-side filter: the shortest image side kept, in pixels."),)

    def decide(self, item):
        minimum = self.values["min_side_pixels"]
        for image in item.sample.images:
            try:
                width, height = self.context.images.size(image)
            except curate.UnreadableImage:
                continue                  # not this filter's question: the image's size is
            if min(width, height) < minimum:
                return {"reason": f"{width}x{height} pixels: a side under {minimum}"}
        return None


@curate.hookimpl
def register_filters(register):
    register(MinSide)
