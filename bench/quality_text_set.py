"""The text-rich dedup quality set: charts, documents, book covers, screenshots, tables and
signs, the kinds of image that make up the OCR and chart part of visual instruction-tuning
mixes (ChartQA/DVQA, DocVQA, OCR-VQA, screen QA, table QA, TextVQA).

Text-rich images are where near-duplicate detection is hardest: within one family every image
shares a template (one plotting style, one letterhead, one series cover, one app layout, one
table style, one photo behind several signs), so two *different* images differ only in their
words and numbers, which an image embedding barely sees. Every family has about ten distinct
originals (each its own cluster) that look alike, and one *hard pair*: two originals that differ
in a single bar, word, cell or number (a chart with one bar changed, a letter with "increase"
for "decrease", "SPEED LIMIT 30" against "SPEED LIMIT 80"). Removing either of a hard pair as a
duplicate of the other is a false removal: a VQA answer would change.

Every original, hard pairs included, also gets one copy per edit below (a JPEG re-encode at
quality 40-75, a PNG<->JPEG conversion, a 50% downscale, a pad to square, a 2-4% border crop
and a caption banner), the near-duplicates a correct dedup removes. Charts, documents,
screenshots and tables are PNG originals, covers and signs JPEG; every extension is truthful.
Everything is drawn from scratch (Pillow, numpy, matplotlib's Agg and its DejaVu fonts) and is
the same for a seed; the signs are drawn on photos of ``../shared/data/images`` (the family is
left out, with a note, where they are absent).

The layout is quality_set.py's: OUT/images/<source>/<nnnnnn>.<ext> (one source folder per
family), OUT/data.json (LLaVA records, originals first, then copies) and OUT/truth.json
(relative path -> cluster, edit, family).

    python bench/quality_text_set.py OUT_DIR      # writes OUT_DIR/images, data.json, truth.json
"""

from __future__ import annotations

import io
import random
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
from quality_set import PHOTOS, write_set  # noqa: E402

LLAVA_PAD = (122, 116, 104)      # the colour LLaVA-1.5 pads images to a square with
SOURCES = {"charts": "chartqa/images", "documents": "docvqa/images", "covers": "ocr_vqa/images",
           "screenshots": "screen/images", "tables": "tables/images", "signs": "textvqa/train_images"}
FORMATS = {"charts": "PNG", "documents": "PNG", "covers": "JPEG", "screenshots": "PNG", "tables": "PNG",
           "signs": "JPEG"}
BANNER_CAPTIONS = ("Source: annual report 2023", "me pretending to read the fine print", "via @datadaily",
                   "Credit: staff photo", "nobody:  absolutely nobody:", "Screenshot from the user forum")


# ---------------------------------------------------------------- drawing helpers

@lru_cache(maxsize=None)
def font(size: int, face: str = "DejaVuSans") -> ImageFont.FreeTypeFont:
    """A DejaVu face shipped inside matplotlib (Pillow's default font where it is missing)."""
    import matplotlib
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{face}.ttf"
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def wrap(text: str, typeface, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` pixels wide."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and typeface.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def swap_once(lines: list[str], swap: tuple[str, str] | None) -> list[str]:
    """``lines`` with the first whole word ``swap[0]`` replaced by ``swap[1]``, after wrapping, so
    the line breaks of both twins of a hard pair are the same."""
    if not swap:
        return lines
    out = list(lines)
    for i, line in enumerate(out):
        words = line.split(" ")
        if swap[0] in words:
            words[words.index(swap[0])] = swap[1]
            out[i] = " ".join(words)
            return out
    raise ValueError(f"{swap[0]!r} is not in the text")


def centred(draw: ImageDraw.ImageDraw, cx: float, y: float, text: str, typeface, fill) -> None:
    draw.text((cx - typeface.getlength(text) / 2, y), text, font=typeface, fill=fill)


def gradient(size: tuple[int, int], top, bottom) -> Image.Image:
    """A vertical colour gradient."""
    t = np.linspace(0, 1, size[1])[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return Image.fromarray(np.repeat(rows, size[0], axis=1).round().astype(np.uint8))


def money(value: float, cents: bool = False) -> str:
    return f"${value:,.2f}" if cents else f"${value:,.0f}"


# ---------------------------------------------------------------- 1. charts

CHART_BLUE = "#2f6db5"
CHART_DIMENSIONS = {
    "country": ["US", "UK", "Germany", "France", "Japan", "Brazil", "India"],
    "age group": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
    "platform": ["YouTube", "Facebook", "Instagram", "TikTok", "Reddit", "LinkedIn"],
    "region": ["North", "South", "East", "West", "Central"],
    "income": ["<$25k", "$25-50k", "$50-75k", "$75-100k", "$100k+"],
}
CHART_METRICS = ["Share of adults who shop online weekly", "Share of respondents who trust news media",
                 "Share of households with a smart speaker", "Share of workers who work from home",
                 "Share of users who pay for streaming", "Share of adults who exercise daily",
                 "Share of consumers who use mobile payments", "Share of students who own a laptop"]


def chart(title: str, labels: list[str], values: list[float], kind: str, source: str) -> Image.Image:
    """One chart in the set's single plotting style (ChartQA/Statista-like), 800x500."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8, 5), dpi=100, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.09, 0.15, 0.88, 0.70))
    if kind == "bar":
        axes.bar(labels, values, color=CHART_BLUE, width=0.62)
    else:
        axes.plot(labels, values, color=CHART_BLUE, marker="o", linewidth=2.4, markersize=6)
    axes.set_ylim(0, 100)
    axes.set_yticks(range(0, 101, 20), [f"{v}%" for v in range(0, 101, 20)])
    axes.set_ylabel("Share of respondents", color="#444444")
    axes.yaxis.grid(True, color="#dddddd")
    axes.set_axisbelow(True)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.tick_params(colors="#333333", labelsize=10, length=0)
    figure.text(0.02, 0.93, title, fontsize=13, fontweight="bold", color="#1a1a1a")
    figure.text(0.02, 0.03, source, fontsize=8, color="#777777")
    figure.text(0.98, 0.03, "chartdata.example", fontsize=8, color="#777777", ha="right")
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def charts(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Ten charts: bar and line, one style, different values and labels; a hard pair of bar
    charts identical but for one bar's height."""
    out = []
    metrics = rng.sample(CHART_METRICS, len(CHART_METRICS))
    for k in range(8):
        metric = metrics[k]
        year = rng.choice(range(2016, 2024))
        pollster = rng.choice(["Pew-like", "YouGov-like", "Eurostat-like"])
        source = f"Source: {pollster} survey, n = {rng.randint(900, 4000):,}"
        if k < 5:
            dimension = rng.choice(list(CHART_DIMENSIONS))
            labels = CHART_DIMENSIONS[dimension]
            values = [rng.randint(8, 92) for _ in labels]
            title = f"{metric}, by {dimension} ({year})"
            out.append((f"charts {k:02d}", chart(title, labels, values, "bar", source)))
        else:
            labels = [str(y) for y in range(year - 8, year + 1)]
            level = rng.randint(20, 60)
            values = [min(95, max(5, level + 4 * i + rng.randint(-6, 6))) for i in range(len(labels))]
            title = f"{metric}, {labels[0]}-{labels[-1]}"
            out.append((f"charts {k:02d}", chart(title, labels, values, "line", source)))
    labels = CHART_DIMENSIONS["country"]
    values = [rng.randint(20, 80) for _ in labels]
    twin = list(values)
    bar = rng.randrange(len(labels))
    twin[bar] = values[bar] + (14 if values[bar] < 60 else -14)
    title = f"Share of adults who read a print newspaper, by country ({rng.randint(2016, 2023)})"
    source = "Source: Pew-like survey, n = 2,412"
    out.append(("charts hard pair a", chart(title, labels, values, "bar", source)))
    out.append((f"charts hard pair b ({labels[bar]} bar {values[bar]} -> {twin[bar]})",
                chart(title, labels, twin, "bar", source)))
    return out


# ---------------------------------------------------------------- 2. documents

NAVY = (24, 52, 96)
DOC_WORDS = {
    "noun": ["proposal", "contract", "budget", "schedule", "specification", "estimate", "report", "agreement",
             "purchase order", "work plan", "survey", "tender"],
    "project": ["Riverside", "Atlas", "Meridian", "Harbor Point", "Summit", "Cedar Grove", "Northfield", "Kestrel"],
    "dept": ["finance", "procurement", "legal", "engineering", "operations", "marketing", "facilities"],
    "verb": ["review", "finalize", "submit", "revise", "circulate", "sign", "update"],
    "metric": ["operating costs", "staffing levels", "freight rates", "energy use", "maintenance expenses",
               "travel spending", "insurance premiums"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "person": ["Ms. Laura Bennett", "Mr. David Osei", "Dr. Helen Park", "Mr. Thomas Reilly", "Ms. Priya Nair",
               "Mr. Jonas Weber"],
    "items": ["steel fittings", "office furniture", "laboratory supplies", "server racks", "safety equipment"],
}
DOC_SENTENCES = [
    "We are writing to confirm the {noun} for the {project} project discussed at our meeting on {date}.",
    "As agreed, the {dept} team will {verb} the draft {noun} before the end of {month}.",
    "Please review the enclosed {noun} and return a signed copy to this office by {date}.",
    "Our records indicate that invoice {inv} remains outstanding in the amount of {amount}.",
    "Any questions regarding the {noun} should be directed to {person} in the {dept} department.",
    "We appreciate your continued support and look forward to working with you on the {project} initiative.",
    "Following the audit, the {dept} group recommends that the {noun} be updated to reflect current {metric}.",
    "Delivery of the remaining {items} is now expected on {date}, subject to final approval of the {noun}.",
    "In accordance with section {sec} of the agreement, both parties will {verb} the {noun} once a year.",
    "The figures for {month} show that {metric} remained within the limits set out in the {noun}.",
    "A copy of this letter has been sent to {person} for information.",
    "We would be grateful if you could confirm receipt of the {items} at your earliest convenience.",
    "The committee will meet again on {date} to {verb} the {noun} and agree the next steps.",
]
HARD_SENTENCE = "The board has approved a budget increase of {pct}% for {metric} in the coming financial year."
SUBJECTS = ["Renewal of service agreement", "Outstanding invoice", "Revised delivery schedule", "Annual budget review",
            "Audit findings", "Contract amendment", "Quarterly progress report", "Change of supplier",
            "Facility maintenance plan", "Confirmation of order"]
RECIPIENTS = [["Mr. Alan Price", "Purchasing Manager", "Westbrook Supplies Ltd.", "22 Mill Lane, Leeds LS2 7EW"],
              ["Ms. Carla Jensen", "Director of Operations", "Fernhill Logistics", "8 Quay Street, Hull HU1 1AB"],
              ["Dr. Samuel Ade", "Head of Research", "Orchard Biotech plc", "5 Science Park, Cambridge CB4 0WS"],
              ["Mrs. Joan Whitaker", "Finance Officer", "Elmstead Borough Council", "Town Hall, Elmstead EL1 2TH"],
              ["Mr. Rafael Costa", "Account Manager", "Bluewater Freight", "Unit 4, Dock Road, Tilbury RM18 7AA"]]
SIGNERS = [("Margaret Hollis", "Chief Financial Officer"), ("Peter Lindqvist", "Head of Procurement"),
           ("Anita Rao", "Operations Director"), ("George Whitfield", "Company Secretary")]


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(words) for key, words in DOC_WORDS.items()}
    values.update(date=f"{rng.randint(1, 28)} {rng.choice(DOC_WORDS['month'])} 2023",
                  inv=f"NG-{rng.randint(10000, 99999)}",
                  amount=money(rng.randint(1200, 98000), cents=True), sec=f"{rng.randint(2, 14)}.{rng.randint(1, 9)}",
                  pct=rng.randint(3, 18))
    return template.format(**values)


def letter_content(rng: random.Random, hard: bool = False) -> dict:
    """The words of one letter: date, reference, recipient, subject, paragraphs, signer."""
    paragraphs = []
    for p in range(rng.randint(3, 4)):
        sentences = [_fill(s, rng) for s in rng.sample(DOC_SENTENCES, rng.randint(2, 3))]
        if hard and p == 1:
            sentences.insert(1, _fill(HARD_SENTENCE, rng))
        paragraphs.append(" ".join(sentences))
    return {"date": f"{rng.randint(1, 28)} {rng.choice(DOC_WORDS['month'])} 2023",
            "ref": f"NH/{rng.choice(['FIN', 'PRC', 'OPS', 'LEG'])}/{rng.randint(1000, 9999)}",
            "recipient": rng.choice(RECIPIENTS), "subject": rng.choice(SUBJECTS), "paragraphs": paragraphs,
            "signer": rng.choice(SIGNERS)}


def document(content: dict, swap: tuple[str, str] | None = None) -> Image.Image:
    """A one-page letter on the Northgate Holdings letterhead, 850x1100 white page."""
    page = Image.new("RGB", (850, 1100), "white")
    draw = ImageDraw.Draw(page)
    draw.rectangle((60, 48, 132, 120), fill=NAVY)
    centred(draw, 96, 64, "NH", font(32, "DejaVuSerif-Bold"), "white")
    draw.text((150, 52), "Northgate Holdings Ltd.", font=font(30, "DejaVuSerif-Bold"), fill=NAVY)
    draw.text((152, 96), "14 Harbour Road · Bristol BS1 4QA · +44 117 496 0321 · northgate.example",
              font=font(13), fill=(90, 90, 90))
    draw.line((60, 138, 790, 138), fill=NAVY, width=3)
    draw.line((60, 144, 790, 144), fill=NAVY, width=1)
    body, bold = font(16, "DejaVuSerif"), font(16, "DejaVuSerif-Bold")
    draw.text((60, 172), f"Our ref: {content['ref']}", font=body, fill="black")
    draw.text((790 - body.getlength(content["date"]), 172), content["date"], font=body, fill="black")
    y = 214
    for line in content["recipient"]:
        draw.text((60, y), line, font=body, fill="black")
        y += 23
    y += 24
    draw.text((60, y), f"Re: {content['subject']}", font=bold, fill="black")
    y += 40
    draw.text((60, y), f"Dear {content['recipient'][0].split()[0]} {content['recipient'][0].split()[-1]},",
              font=body, fill="black")
    y += 38
    lines = []
    for paragraph in content["paragraphs"]:
        lines += wrap(paragraph, body, 730) + [""]
    for line in swap_once(lines, swap):
        draw.text((60, y), line, font=body, fill="black")
        y += 25 if line else 12
    y += 16
    draw.text((60, y), "Yours sincerely,", font=body, fill="black")
    name, title = content["signer"]
    draw.text((64, y + 34), name, font=font(24, "DejaVuSerif-Italic"), fill=(30, 40, 110))
    draw.text((60, y + 76), name, font=bold, fill="black")
    draw.text((60, y + 99), title, font=body, fill="black")
    draw.line((60, 1040, 790, 1040), fill=(170, 170, 170), width=1)
    centred(draw, 425, 1050, "Northgate Holdings Ltd. · Registered in England No. 04829113 · Page 1 of 1",
            font(12), (110, 110, 110))
    return page


def documents(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Ten letters on one letterhead with different words; a hard pair that differs in one word
    ("increase" / "decrease")."""
    out = [(f"documents {k:02d}", document(letter_content(rng))) for k in range(8)]
    content = letter_content(rng, hard=True)
    out.append(("documents hard pair a", document(content)))
    out.append(("documents hard pair b (increase -> decrease)", document(content, ("increase", "decrease"))))
    return out


# ---------------------------------------------------------------- 3. book covers

COVER_TITLES = ["The Lantern Keeper's Daughter", "Death at Gull Point", "A Quiet Tide", "The Saltmarsh Letters",
                "Murder in the Fog", "The Drowned Chapel", "Smugglers' Moon", "The Last Ferry Home"]
COVER_AUTHORS = ["Eleanor Marsh", "J. R. Pellow", "Agnes Thorne", "Martin Kessel", "Ruth Calloway",
                 "Owen Pryce", "Clara Winslow", "Hugh Tremayne"]
GOLD = (214, 172, 84)


def cover(title: str, author: str, number: int, swap: tuple[str, str] | None = None) -> Image.Image:
    """A 400x600 cover of the "Harbour Lights Mysteries" series: one gradient, band, art and logo."""
    image = gradient((400, 600), (24, 78, 104), (6, 22, 36))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 26, 400, 74), fill=GOLD)
    centred(draw, 200, 32, "A HARBOUR LIGHTS MYSTERY", font(18, "DejaVuSans-Bold"), (14, 34, 52))
    centred(draw, 200, 54, f"BOOK {number}", font(12, "DejaVuSans-Bold"), (14, 34, 52))
    typeface = font(40, "DejaVuSerif-Bold")
    lines = swap_once(wrap(title, typeface, 340), swap)
    y = 210 - 25 * len(lines)
    for line in lines:
        centred(draw, 200, y, line, typeface, (250, 246, 236))
        y += 50
    draw.line((110, y + 18, 290, y + 18), fill=GOLD, width=2)
    draw.regular_polygon((200, y + 18, 7), 4, fill=GOLD)
    draw.ellipse((280, 330, 336, 386), fill=(238, 228, 196))                       # the moon
    draw.polygon([(0, 470), (90, 430), (170, 455), (260, 415), (400, 450), (400, 600), (0, 600)], fill=(4, 14, 22))
    draw.polygon([(96, 452), (108, 370), (122, 370), (134, 452)], fill=(225, 225, 220))   # lighthouse
    draw.rectangle((104, 356, 126, 370), fill=(250, 210, 110))
    draw.polygon([(126, 360), (230, 330), (230, 392)], fill=(70, 98, 110))        # its beam
    centred(draw, 200, 498, author.upper(), font(22, "DejaVuSans"), GOLD)
    draw.ellipse((150, 550, 176, 576), outline=GOLD, width=2)
    centred(draw, 163, 553, "P", font(16, "DejaVuSerif-Bold"), GOLD)
    draw.text((184, 554), "PENROSE", font=font(15, "DejaVuSans-Bold"), fill=GOLD)
    return image.filter(ImageFilter.GaussianBlur(0.4))


def covers(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Ten covers of one series with different titles and authors; a hard pair whose titles
    differ in one word."""
    titles, authors = rng.sample(COVER_TITLES, 8), rng.sample(COVER_AUTHORS, 8)
    out = [(f"covers {k:02d}", cover(titles[k], authors[k], k + 1)) for k in range(8)]
    out.append(("covers hard pair a", cover("The Widow of Saltmarsh Lane", "Eleanor Marsh", 9)))
    out.append(("covers hard pair b (Lane -> Road)",
                cover("The Widow of Saltmarsh Lane", "Eleanor Marsh", 9, ("Lane", "Road"))))
    return out


# ---------------------------------------------------------------- 4. screenshots

INDIGO = (79, 70, 229)
SLATE = (30, 41, 59)
WORKSPACES = ["Acme Retail", "Bluefin Labs", "Corvid Coffee", "Dunmore Books", "Everpine Outdoor",
              "Foxglove Studio", "Granite Tools", "Hollis & Co", "Ironbark Bikes", "Juniper Health"]
SECTIONS = ["Sales", "Subscriptions", "Marketing", "Support", "Inventory", "Payments"]
CUSTOMERS = ["Acme Corp", "Birch & Sons", "Cobalt Ltd", "Delta Foods", "Echo Media", "Fable Inc", "Gamma Health",
             "Harbor Co", "Indigo Arts", "Jasper LLC", "Kite Travel", "Lumen Labs"]
PRODUCTS = ["Starter plan", "Pro plan", "Team plan", "Add-on seats", "Priority support", "API credits"]
STATUS_COLOURS = {"Paid": ((220, 252, 231), (22, 101, 52)), "Pending": ((254, 243, 199), (146, 64, 14)),
                  "Refunded": ((254, 226, 226), (153, 27, 27))}


def screen_content(rng: random.Random) -> dict:
    """The text and numbers of one dashboard screenshot."""
    month = rng.choice(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"])
    return {"workspace": rng.choice(WORKSPACES), "section": rng.choice(SECTIONS),
            "range": f"{month} 1 - {month} 30, 2024", "user": rng.choice(["JD", "AK", "MS", "RT", "LC"]),
            "kpis": [("Revenue", money(rng.randint(20000, 480000)), rng.uniform(-9, 15)),
                     ("Orders", f"{rng.randint(300, 9000):,}", rng.uniform(-9, 15)),
                     ("New customers", f"{rng.randint(40, 900):,}", rng.uniform(-9, 15)),
                     ("Conversion", f"{rng.uniform(1, 6):.1f}%", rng.uniform(-9, 15))],
            "bars": [rng.randint(25, 100) for _ in range(12)],
            "orders": [(f"#{rng.randint(10000, 99999)}", rng.choice(CUSTOMERS), money(rng.uniform(40, 4000), True),
                        rng.choice(["Paid", "Paid", "Pending", "Refunded"])) for _ in range(9)],
            "products": [(p, rng.randint(15, 95)) for p in rng.sample(PRODUCTS, 4)]}


def _card(draw, box, title=None):
    draw.rounded_rectangle(box, 10, fill="white", outline=(226, 232, 240))
    if title:
        draw.text((box[0] + 18, box[1] + 14), title, font=font(16, "DejaVuSans-Bold"), fill=SLATE)


def screenshot(content: dict) -> Image.Image:
    """A 1280x800 "Ledgerly" web-app dashboard: nav bar, sidebar, KPI cards, chart, list, table."""
    image = Image.new("RGB", (1280, 800), (241, 245, 249))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 56), fill=SLATE)                                       # nav bar
    draw.rounded_rectangle((16, 12, 48, 44), 8, fill=INDIGO)
    centred(draw, 32, 15, "L", font(22, "DejaVuSans-Bold"), "white")
    draw.text((60, 15), "Ledgerly", font=font(21, "DejaVuSans-Bold"), fill="white")
    x = 240
    for item in ("Overview", "Reports", "Customers", "Billing", "Settings"):
        draw.text((x, 19), item, font=font(15), fill="white" if item == "Overview" else (148, 163, 184))
        x += font(15).getlength(item) + 34
    draw.rounded_rectangle((880, 12, 1180, 44), 8, fill=(51, 65, 85))
    draw.text((896, 19), "Search orders, customers...", font=font(14), fill=(148, 163, 184))
    draw.ellipse((1212, 10, 1248, 46), fill=(129, 140, 248))
    centred(draw, 1230, 19, content["user"], font(14, "DejaVuSans-Bold"), "white")
    draw.rectangle((0, 56, 220, 800), fill=(248, 250, 252), outline=(226, 232, 240))   # sidebar
    for i, item in enumerate(("Dashboard", "Orders", "Products", "Invoices", "Analytics", "Team", "Integrations",
                              "Help")):
        if i == 0:
            draw.rounded_rectangle((12, 76, 208, 110), 8, fill=(224, 231, 255))
        draw.text((32, 84 + 42 * i), item, font=font(15), fill=INDIGO if i == 0 else (71, 85, 105))
    draw.text((20, 760), content["workspace"], font=font(14, "DejaVuSans-Bold"), fill=(71, 85, 105))
    draw.text((244, 70), f"Home / {content['section']}", font=font(13), fill=(100, 116, 139))
    draw.text((244, 90), f"{content['section']} overview", font=font(26, "DejaVuSans-Bold"), fill=SLATE)
    draw.rounded_rectangle((1040, 92, 1260, 124), 8, fill="white", outline=(203, 213, 225))
    centred(draw, 1150, 99, content["range"], font(13), (51, 65, 85))
    for i, (label, value, delta) in enumerate(content["kpis"]):                         # KPI cards
        left = 240 + 260 * i
        _card(draw, (left, 142, left + 240, 250))
        draw.text((left + 18, 158), label, font=font(14), fill=(100, 116, 139))
        draw.text((left + 18, 182), value, font=font(30, "DejaVuSans-Bold"), fill=SLATE)
        colour = (22, 163, 74) if delta >= 0 else (220, 38, 38)
        draw.text((left + 18, 224), f"{delta:+.1f}% vs last month", font=font(12), fill=colour)
    _card(draw, (240, 270, 760, 540), "Revenue by month")                              # bar chart
    for i, height in enumerate(content["bars"]):
        left = 268 + 40 * i
        draw.rectangle((left, 510 - 1.9 * height, left + 24, 510), fill=INDIGO)
        centred(draw, left + 12, 515, "JFMAMJJASOND"[i], font(11), (100, 116, 139))
    _card(draw, (240, 560, 760, 780), "Top products")                                  # product list
    for i, (name, share) in enumerate(content["products"]):
        y = 604 + 42 * i
        draw.text((258, y), name, font=font(14), fill=(51, 65, 85))
        draw.rounded_rectangle((420, y + 4, 700, y + 14), 5, fill=(226, 232, 240))
        draw.rounded_rectangle((420, y + 4, 420 + 2.8 * share, y + 14), 5, fill=(129, 140, 248))
        draw.text((710, y), f"{share}%", font=font(13), fill=(100, 116, 139))
    _card(draw, (780, 270, 1260, 780), "Recent orders")                                # orders table
    for j, head in enumerate(("Order", "Customer", "Amount", "Status")):
        draw.text((798 + (0, 90, 230, 350)[j], 312), head, font=font(12, "DejaVuSans-Bold"), fill=(100, 116, 139))
    for i, (order, customer, amount, status) in enumerate(content["orders"]):
        y = 342 + 46 * i
        draw.line((796, y - 8, 1244, y - 8), fill=(241, 245, 249), width=1)
        draw.text((798, y + 4), order, font=font(13, "DejaVuSansMono"), fill=(51, 65, 85))
        draw.text((888, y + 4), customer, font=font(13), fill=(51, 65, 85))
        draw.text((1028, y + 4), amount, font=font(13), fill=(51, 65, 85))
        fill, ink = STATUS_COLOURS[status]
        draw.rounded_rectangle((1148, y, 1148 + 78, y + 26), 13, fill=fill)
        centred(draw, 1187, y + 5, status, font(12, "DejaVuSans-Bold"), ink)
    return image


def screenshots(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Ten dashboards of one app with different text and numbers; a hard pair that differs in
    one number (the last digit of the orders KPI)."""
    out = [(f"screenshots {k:02d}", screenshot(screen_content(rng))) for k in range(8)]
    content = screen_content(rng)
    label, value, delta = content["kpis"][1]
    twin_value = value[:-1] + str((int(value[-1]) + 5) % 10)
    twin = dict(content, kpis=[content["kpis"][0], (label, twin_value, delta), *content["kpis"][2:]])
    out.append(("screenshots hard pair a", screenshot(content)))
    out.append((f"screenshots hard pair b (orders {value} -> {twin_value})", screenshot(twin)))
    return out


# ---------------------------------------------------------------- 5. tables

TABLE_TOPICS = [
    ("Revenue by region, {y} (USD thousands)", ["Q1", "Q2", "Q3", "Q4", "Total"],
     ["North America", "Latin America", "Western Europe", "Eastern Europe", "Middle East", "Africa", "South Asia",
      "East Asia", "Southeast Asia", "Oceania"], (200, 9000)),
    ("Students enrolled by faculty, {y0}-{y}", None,
     ["Arts", "Business", "Engineering", "Law", "Medicine", "Nursing", "Science", "Education", "Music",
      "Architecture"], (150, 4800)),
    ("Units sold by product line, {y0}-{y}", None,
     ["Kettles", "Toasters", "Blenders", "Microwaves", "Fridges", "Freezers", "Dishwashers", "Vacuums",
      "Heaters", "Fans"], (1000, 60000)),
    ("Passengers by airport, {y} (thousands)", ["Jan", "Feb", "Mar", "Apr", "May"],
     ["Heathrow", "Gatwick", "Manchester", "Stansted", "Luton", "Edinburgh", "Birmingham", "Glasgow", "Bristol",
      "Belfast"], (300, 7000)),
    ("Hospital admissions by department, {y}", ["Q1", "Q2", "Q3", "Q4", "Total"],
     ["Cardiology", "Oncology", "Orthopaedics", "Neurology", "Paediatrics", "Maternity", "Urology", "Geriatrics",
      "Dermatology", "Emergency"], (80, 3000)),
    ("Employees by office, {y0}-{y}", None,
     ["London", "Paris", "Berlin", "Madrid", "Milan", "Warsaw", "Dublin", "Lisbon", "Vienna", "Prague"],
     (40, 2500)),
    ("Rainfall by station, {y} (mm)", ["Jan", "Feb", "Mar", "Apr", "May"],
     ["Aberdeen", "Cardiff", "Dover", "Exeter", "Inverness", "Keswick", "Lerwick", "Oban", "Plymouth", "York"],
     (20, 260)),
    ("Library loans by branch, {y0}-{y}", None,
     ["Central", "Riverside", "Hillcrest", "Oakwood", "Westgate", "Northend", "Parkside", "Ashford", "Lakeview",
      "Elmfield"], (900, 40000)),
]


def table_content(rng: random.Random, topic: tuple) -> dict:
    """Title, column heads, row labels and numbers of one table."""
    title, columns, rows, (low, high) = topic
    year = rng.randint(2018, 2023)
    columns = columns or [str(y) for y in range(year - 4, year + 1)]
    body = []
    for _ in rows:
        level = rng.randint(low, high)
        values = [round(level * rng.uniform(0.8, 1.25)) for _ in columns]
        if columns[-1] == "Total":
            values[-1] = sum(values[:-1])
        body.append([f"{v:,}" for v in values])
    source = rng.choice(["ONS", "Eurostat", "company filings", "annual returns"])
    return {"title": f"Table {rng.randint(2, 9)}. {title.format(y=year, y0=year - 4)}", "columns": columns,
            "rows": rows, "body": body, "note": f"Note: provisional figures. Source: {source}."}


def table(content: dict) -> Image.Image:
    """A 900x520 table: bold title, dark header row, zebra rows, right-aligned numbers."""
    image = Image.new("RGB", (900, 520), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 18), content["title"], font=font(18, "DejaVuSans-Bold"), fill=(33, 37, 41))
    top, head_h, row_h = 60, 40, 36
    draw.rectangle((20, top, 880, top + head_h), fill=(44, 62, 80))
    head, cell = font(15, "DejaVuSans-Bold"), font(15)
    for j, name in enumerate(content["columns"]):
        right = 280 + 120 * (j + 1) - 14
        draw.text((right - head.getlength(name), top + 11), name, font=head, fill="white")
    for i, (label, values) in enumerate(zip(content["rows"], content["body"])):
        y = top + head_h + row_h * i
        draw.rectangle((20, y, 880, y + row_h), fill=(255, 255, 255) if i % 2 == 0 else (242, 245, 248))
        draw.text((32, y + 9), label, font=cell, fill=(33, 37, 41))
        for j, value in enumerate(values):
            right = 280 + 120 * (j + 1) - 14
            draw.text((right - cell.getlength(value), y + 9), value, font=cell, fill=(33, 37, 41))
        draw.line((20, y + row_h, 880, y + row_h), fill=(215, 220, 226))
    bottom = top + head_h + row_h * len(content["rows"])
    draw.line((20, bottom, 880, bottom), fill=(44, 62, 80), width=2)
    draw.text((20, bottom + 12), content["note"], font=font(13, "DejaVuSans-Oblique"), fill=(108, 117, 125))
    return image


def tables(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Ten tables in one style with different words and numbers; a hard pair that differs in
    one cell's number."""
    topics = rng.sample(TABLE_TOPICS, len(TABLE_TOPICS))
    out = [(f"tables {k:02d}", table(table_content(rng, topics[k]))) for k in range(8)]
    content = table_content(rng, topics[0])
    i, j = rng.randrange(10), rng.randrange(4)
    old = content["body"][i][j]
    new = old[:-1] + str((int(old[-1]) + 3) % 10)
    twin = dict(content, body=[list(row) for row in content["body"]])
    twin["body"][i][j] = new
    out.append(("tables hard pair a", table(content)))
    out.append((f"tables hard pair b (cell {content['rows'][i]}/{content['columns'][j]} {old} -> {new})",
                table(twin)))
    return out


# ---------------------------------------------------------------- 6. signs

# (photo, kind, lines, top-left, style): a plate is a solid sign (fill, ink, border, text size, maybe a
# bigger last line, rotation, a post below it); "text" is lettering straight on the photo (ink,
# outline, size, angle).
SIGNS = [
    ("llava_example_extreme_ironing", "plate", ["SPEED", "LIMIT", "30"], (28, 70),
     {"fill": (250, 250, 250), "ink": (10, 10, 10), "border": (10, 10, 10), "size": 17, "last_size": 34, "angle": 2,
      "post": True}),
    ("llava_example_extreme_ironing", "plate", ["SPEED", "LIMIT", "80"], (28, 70),
     {"fill": (250, 250, 250), "ink": (10, 10, 10), "border": (10, 10, 10), "size": 17, "last_size": 34, "angle": 2,
      "post": True}),
    ("llava_example_extreme_ironing", "plate", ["W 34 St"], (400, 28),
     {"fill": (0, 112, 60), "ink": (255, 255, 255), "border": (255, 255, 255), "size": 22, "angle": -1,
      "post": False}),
    ("llava_example_extreme_ironing", "text", ["BUS ONLY"], (70, 318),
     {"ink": (245, 245, 240), "outline": None, "size": 34, "angle": 4}),
    ("llava_example_waterview", "plate", ["Gate 12", "Ferry terminal"], (70, 168),
     {"fill": (20, 70, 150), "ink": (255, 255, 255), "border": (255, 255, 255), "size": 18, "angle": 0,
      "post": True}),
    ("llava_example_waterview", "plate", ["PIER 4", "NO DIVING"], (400, 218),
     {"fill": (120, 74, 38), "ink": (250, 236, 200), "border": (70, 40, 20), "size": 18, "angle": -3,
      "post": True}),
    ("llava_example_waterview", "text", ["Lake Meridian"], (36, 28),
     {"ink": (255, 255, 255), "outline": (40, 50, 60), "size": 44, "angle": 0}),
    ("skimage_coffee", "plate", ["TODAY'S SPECIAL", "Flat white $4.20"], (356, 18),
     {"fill": (38, 44, 40), "ink": (240, 240, 232), "border": (120, 90, 60), "size": 17, "angle": 2,
      "post": False}),
    ("skimage_coffee", "text", ["Café Lumen"], (310, 296),
     {"ink": (255, 248, 235), "outline": (60, 30, 10), "size": 36, "angle": -6}),
    ("skimage_coffee", "text", ["Open 7am - 4pm"], (300, 330),
     {"ink": (255, 255, 255), "outline": (0, 0, 0), "size": 30, "angle": 0}),
    ("skimage_motorcycle_left", "plate", ["BAY 7"], (300, 60),
     {"fill": (250, 204, 21), "ink": (20, 20, 20), "border": (20, 20, 20), "size": 28, "angle": 0, "post": False}),
    ("skimage_motorcycle_left", "plate", ["STAFF ONLY", "No entry"], (300, 60),
     {"fill": (245, 245, 245), "ink": (190, 20, 30), "border": (190, 20, 30), "size": 20, "angle": 0,
      "post": False}),
]


def plate(lines: list[str], style: dict) -> Image.Image:
    """An RGBA sign plate: a solid rounded rectangle with an inset border and centred text."""
    typefaces = [font(style["size"], "DejaVuSans-Bold") for _ in lines]
    if "last_size" in style:                    # e.g. the big number of a speed-limit sign
        typefaces[-1] = font(style["last_size"], "DejaVuSans-Bold")
    pad, gap = style["size"] // 2 + 6, style["size"] // 4
    heights = [typeface.getbbox(line)[3] for typeface, line in zip(typefaces, lines)]
    w = round(max(typeface.getlength(line) for typeface, line in zip(typefaces, lines))) + 2 * pad
    h = sum(heights) + gap * (len(lines) - 1) + 2 * pad
    sign = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sign)
    draw.rounded_rectangle((0, 0, w - 1, h - 1), 6, fill=style["fill"])
    draw.rounded_rectangle((3, 3, w - 4, h - 4), 4, outline=style["border"], width=2)
    y = pad - 2
    for typeface, line, height in zip(typefaces, lines, heights):
        centred(draw, w / 2, y, line, typeface, style["ink"])
        y += height + gap
    return sign.rotate(style["angle"], resample=Image.Resampling.BICUBIC, expand=True)


def lettering(lines: list[str], style: dict) -> Image.Image:
    """RGBA text to lay straight on a photo (painted, printed or a shop name), maybe outlined."""
    typeface = font(style["size"], "DejaVuSans-Bold")
    stroke = 2 if style["outline"] else 0
    w = round(max(typeface.getlength(line) for line in lines)) + 8
    h = (style["size"] + 8) * len(lines) + 8
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for i, line in enumerate(lines):
        draw.text((4, 4 + (style["size"] + 8) * i), line, font=typeface, fill=style["ink"] + (235,),
                  stroke_width=stroke, stroke_fill=style["outline"])
    return layer.rotate(style["angle"], resample=Image.Resampling.BICUBIC, expand=True)


def sign(photo: Image.Image, kind: str, lines: list[str], at: tuple[int, int], style: dict) -> Image.Image:
    """``photo`` with a plate (shadow, maybe a post) or lettering composited at ``at``."""
    image = photo.copy()
    layer = plate(lines, style) if kind == "plate" else lettering(lines, style)
    if kind == "plate" and style["post"]:
        ImageDraw.Draw(image).rectangle((at[0] + layer.width // 2 - 3, at[1] + layer.height - 4,
                                         at[0] + layer.width // 2 + 3, image.height), fill=(110, 112, 115))
    if kind == "plate":
        shadow = Image.new("RGBA", layer.size, (0, 0, 0, 0))
        shadow.putalpha(layer.getchannel("A").point(lambda a: a // 2))
        image.paste(shadow.filter(ImageFilter.GaussianBlur(3)), (at[0] + 4, at[1] + 4),
                    shadow.filter(ImageFilter.GaussianBlur(3)))
    layer = layer.filter(ImageFilter.GaussianBlur(0.5))        # as sharp as the photo around it
    image.paste(layer, at, layer)
    return image


def signs(rng: random.Random) -> list[tuple[str, Image.Image]]:
    """Twelve signs on four photos (several texts per photo); a hard pair "SPEED LIMIT 30" /
    "SPEED LIMIT 80". Empty, with a note, where the photos are absent."""
    if not PHOTOS.is_dir():
        print(f"note: {PHOTOS} is absent: the signs family is left out")
        return []
    out = []
    for k, (name, kind, lines, at, style) in enumerate(SIGNS):
        photo = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
        cluster = {0: "signs hard pair a", 1: "signs hard pair b (SPEED LIMIT 30 -> 80)"}.get(k, f"signs {k:02d}")
        out.append((cluster, sign(photo, kind, lines, at, style)))
    return out


FAMILIES = {"charts": charts, "documents": documents, "covers": covers, "screenshots": screenshots,
            "tables": tables, "signs": signs}


# ---------------------------------------------------------------- near-duplicate edits
# Each takes (image, format of the original, rng) and returns (edit name, image, format, JPEG quality).

def jpeg_reencode(image, fmt, rng):
    """A lossy JPEG at quality 40-75 (of a PNG original, also a PNG->JPEG conversion)."""
    return "jpeg re-encode", image, "JPEG", rng.randint(40, 75)


def format_swap(image, fmt, rng):
    """A PNG original saved as a good JPEG (90-95); a JPEG original decoded and saved as PNG."""
    if fmt == "PNG":
        return "png to jpeg", image, "JPEG", rng.randint(90, 95)
    return "jpeg to png", image, "PNG", None


def downscale(image, fmt, rng):
    """Half size, bicubic, in the original's format."""
    half = image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)
    return "downscale 50%", half, fmt, rng.randint(90, 95)


def pad_square(image, fmt, rng):
    """Centred on a square canvas of LLaVA's pad colour or white."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), rng.choice([LLAVA_PAD, (255, 255, 255)]))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return "pad to square", square, fmt, rng.randint(90, 95)


def border_crop(image, fmt, rng):
    """2-4% cut from each side, each side its own amount."""
    w, h = image.size
    box = (round(w * rng.uniform(0.02, 0.04)), round(h * rng.uniform(0.02, 0.04)),
           w - round(w * rng.uniform(0.02, 0.04)), h - round(h * rng.uniform(0.02, 0.04)))
    return "border crop", image.crop(box), fmt, rng.randint(90, 95)


def caption_banner(image, fmt, rng):
    """A white strip, a sixth of the height, below the image with one line of black text."""
    band = max(28, image.height // 6)
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image, (0, 0))
    size = max(11, min(band // 2, image.width // 22))
    ImageDraw.Draw(out).text((10, image.height + (band - size) // 2), rng.choice(BANNER_CAPTIONS), fill="black",
                             font=font(size))
    return "caption banner", out, fmt, rng.randint(90, 95)


EDITS = (jpeg_reencode, format_swap, downscale, pad_square, border_crop, caption_banner)


# ---------------------------------------------------------------- the set

def build(out: Path, seed: int = 0) -> dict:
    """Write the set under ``out``; return the truth: per image, its cluster, edit and family."""
    rng = random.Random(seed)
    out = Path(out)
    originals, copies, truth = [], [], {}

    def add(listing, image, family, cluster, edit, fmt, quality):
        relative = f"{SOURCES[family]}/{len(truth):06d}.{'png' if fmt == 'PNG' else 'jpg'}"
        path = out / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        path.write_bytes(buffer.getvalue())
        truth[relative] = {"cluster": cluster, "edit": edit, "family": family}
        listing.append(relative)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    for family, make in FAMILIES.items():
        fmt = FORMATS[family]
        for cluster, image in make(rng):
            stored = add(originals, image, family, cluster, "original", fmt, rng.randint(90, 95))
            for edit in EDITS:      # copies are made from the original as stored (a JPEG's artefacts included)
                name, copy, copy_fmt, quality = edit(stored, fmt, rng)
                add(copies, copy, family, cluster, name, copy_fmt, quality)
    write_set(out, originals + copies, truth, "t")
    return truth


if __name__ == "__main__":
    start = time.perf_counter()
    truth = build(Path(sys.argv[1]))
    seconds = time.perf_counter() - start
    clusters = {t["cluster"] for t in truth.values()}
    print(f"{len(truth)} images, {len(clusters)} distinct images, "
          f"{sum(t['edit'] != 'original' for t in truth.values())} near-duplicates, {seconds:.1f} s")
    for family, source in SOURCES.items():
        mine = [t for t in truth.values() if t["family"] == family]
        print(f"  {family:12} {source:22} {sum(t['edit'] == 'original' for t in mine):3} originals "
              f"({sum('hard pair' in t['cluster'] and t['edit'] == 'original' for t in mine)} a hard pair), "
              f"{sum(t['edit'] != 'original' for t in mine):3} copies")
