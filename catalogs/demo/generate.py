"""Write ``trailhead-outfitters.csv``: the demo shop's catalog, ~300 items in Meta's catalog-feed format.

Deterministic (a fixed seed), so the committed file and a regenerated one are identical and re-seeding the
demo embeds nothing. Run: ``python -m catalogs.demo.generate``.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

OUT = Path(__file__).with_name("trailhead-outfitters.csv")
SHOP_URL = "https://trailhead-outfitters.example"
TEMPLATE_ROW = [
    "# Required | Max 100 characters",
    "# Required | Max 200 characters",
    "# Required | Max 9999 characters",
    "# Required | in stock, out of stock",
    "# Required | new, used",
    "# Required | 9.99 USD",
    "# Optional | 9.99 USD",
    "# Required | URL",
    "# Required | URL",
    "# Required | Max 100 characters",
    "# Optional",
    "# Optional",
    "# Optional",
    "# Optional",
    "# Optional",
    "# Optional",
    "# Optional",
]
HEADER = [
    "id",
    "title",
    "description",
    "availability",
    "condition",
    "price",
    "sale_price",
    "link",
    "image_link",
    "brand",
    "google_product_category",
    "product_type",
    "item_group_id",
    "color",
    "size",
    "material",
    "gender",
]


@dataclass(frozen=True)
class Line:
    """A product line: its names, price range and what varies between its variants."""

    category: str
    google_category: str
    image: str
    names: tuple[str, ...]
    features: tuple[str, ...]
    price: tuple[int, int]
    sizes: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    materials: tuple[str, ...] = ()
    gendered: bool = False


BRANDS = (
    "Ridgeline",
    "Northwind",
    "Alpenglow",
    "Cairn & Co",
    "Summit Forge",
    "Fjellstad",
    "Kestrel",
    "Timberline",
)
LINES = (
    Line(
        "Tents",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Tents",
        "tent",
        (
            "Basecamp 2 tent",
            "Skyline 1 ultralight tent",
            "Meadow 3 family tent",
            "Stormhold 2 four-season tent",
            "Trailhead 4 dome tent",
            "Pika bivy shelter",
        ),
        (
            "freestanding aluminium poles",
            "two doors and two vestibules",
            "fully taped seams",
            "a 3000 mm hydrostatic head fly",
            "a mesh inner for warm nights",
            "pitches fly-first in the rain",
        ),
        (89, 649),
        colors=("forest green", "sand", "orange"),
    ),
    Line(
        "Sleeping bags",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Sleeping Bags",
        "sleeping-bag",
        (
            "Ember down sleeping bag",
            "Glacier -10 sleeping bag",
            "Solstice summer sleeping bag",
            "Drift synthetic sleeping bag",
        ),
        (
            "650 fill-power responsibly sourced down",
            "a draught collar and hood",
            "a two-way zip",
            "packs to the size of a loaf of bread",
            "a comfort rating printed on the foot box",
        ),
        (59, 429),
        sizes=("regular", "long"),
        colors=("navy", "red"),
    ),
    Line(
        "Sleeping mats",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Sleeping Pads",
        "sleeping-mat",
        ("Cloudrest inflatable mat", "Foamcore closed-cell mat", "Thermo self-inflating mat"),
        (
            "R-value 4.2 for three seasons",
            "a quiet, non-crinkly fabric",
            "a fast flat valve",
            "weighs under 500 g",
        ),
        (29, 189),
        sizes=("regular", "wide"),
    ),
    Line(
        "Backpacks",
        "Luggage & Bags > Backpacks",
        "backpack",
        (
            "Ascent 45 trekking pack",
            "Daytrip 22 daypack",
            "Expedition 70 backpack",
            "Ridge 30 hiking pack",
            "Commuter 18 pack",
        ),
        (
            "an adjustable back length",
            "hip-belt pockets",
            "a rain cover in the lid",
            "a hydration sleeve",
            "a ventilated mesh back panel",
            "ice-axe loops",
        ),
        (49, 329),
        sizes=("S/M", "M/L"),
        colors=("black", "slate blue", "olive"),
    ),
    Line(
        "Jackets",
        "Apparel & Accessories > Clothing > Outerwear > Coats & Jackets",
        "jacket",
        (
            "Monsoon 3-layer rain jacket",
            "Cirrus insulated jacket",
            "Windrunner softshell",
            "Puffin down jacket",
            "Fjord hardshell jacket",
        ),
        (
            "a 20,000 mm waterproof membrane",
            "pit zips for ventilation",
            "a helmet-compatible hood",
            "recycled face fabric",
            "a two-way front zip",
            "packs into its own pocket",
        ),
        (79, 459),
        sizes=("XS", "S", "M", "L", "XL"),
        colors=("black", "red", "teal"),
        gendered=True,
    ),
    Line(
        "Base layers",
        "Apparel & Accessories > Clothing > Underwear & Socks",
        "base-layer",
        ("Merino 200 long-sleeve top", "Merino 150 tee", "Thermal leggings", "Alpaca blend hoodie"),
        (
            "odour-resistant merino wool",
            "flatlock seams that don't chafe",
            "a thumb loop",
            "a slim fit for layering",
        ),
        (35, 119),
        sizes=("S", "M", "L", "XL"),
        colors=("charcoal", "heather grey", "burgundy"),
        materials=("merino wool", "merino-nylon blend"),
        gendered=True,
    ),
    Line(
        "Boots",
        "Apparel & Accessories > Shoes > Boots",
        "boot",
        ("Ridgewalker GTX hiking boot", "Scree approach shoe", "Tundra winter boot", "Pathfinder mid boot"),
        (
            "a waterproof breathable lining",
            "a Vibram-style lugged sole",
            "a rubber toe cap",
            "a heel-lock lacing system",
            "a cushioned EVA midsole",
        ),
        (89, 279),
        sizes=("40", "41", "42", "43", "44", "45"),
        colors=("brown", "grey"),
        gendered=True,
    ),
    Line(
        "Trail runners",
        "Apparel & Accessories > Shoes > Athletic Shoes",
        "shoe",
        ("Fleetfoot trail runner", "Mudlark trail shoe", "Longhaul ultra shoe"),
        ("a 6 mm drop", "a rock plate", "sticky rubber lugs for mud", "a breathable mesh upper"),
        (99, 179),
        sizes=("39", "40", "41", "42", "43", "44", "45", "46"),
        colors=("lime", "blue"),
    ),
    Line(
        "Socks",
        "Apparel & Accessories > Clothing > Underwear & Socks > Socks",
        "sock",
        ("Trek merino socks", "Liner socks (2 pairs)", "Expedition heavyweight socks"),
        ("cushioned heel and toe", "merino wool blend", "a seamless toe", "arch support"),
        (12, 29),
        sizes=("S", "M", "L"),
        materials=("merino wool",),
    ),
    Line(
        "Headlamps",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Flashlights & Headlamps",
        "headlamp",
        (
            "Lumen 400 headlamp",
            "Nightowl rechargeable headlamp",
            "Beacon 900 headlamp",
            "Glow camp lantern",
            "Solar power bank 10000 mAh",
        ),
        ("a red night-vision mode", "USB-C charging", "IPX7 waterproofing", "a lock mode for your pack"),
        (19, 119),
    ),
    Line(
        "Stoves & cooking",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Camp Cooking Gear",
        "stove",
        (
            "Pocket gas stove",
            "Jetboil-style cooking system",
            "Titanium pot 750 ml",
            "Camp cookset for two",
            "Multi-fuel expedition stove",
        ),
        (
            "boils a litre in about 4 minutes",
            "a piezo igniter",
            "nests inside the pot",
            "works with standard screw-on gas canisters",
            "weighs 85 g",
        ),
        (15, 169),
    ),
    Line(
        "Water",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Hydration Systems",
        "water",
        ("Squeeze water filter", "Hydration bladder 2 L", "Insulated bottle 750 ml", "UV water purifier"),
        (
            "removes 99.9999% of bacteria",
            "a wide opening for easy cleaning",
            "BPA-free materials",
            "keeps drinks cold for 24 hours",
        ),
        (14, 99),
        colors=("steel", "blue"),
    ),
    Line(
        "Trekking poles",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Hiking Poles",
        "poles",
        ("Carbon Z trekking poles", "Aluminium trekking poles", "Folding trail poles"),
        ("quick flick-lock adjustment", "cork grips", "tungsten carbide tips", "fold to 38 cm"),
        (39, 159),
    ),
    Line(
        "Climbing",
        "Sporting Goods > Outdoor Recreation > Climbing",
        "climbing",
        ("Crag harness", "Dynamic rope 9.8 mm 60 m", "Locking carabiner", "Climbing helmet", "Chalk bag"),
        ("UIAA certified", "four gear loops", "adjustable leg loops", "a dry treatment"),
        (9, 219),
        sizes=("S", "M", "L"),
    ),
    Line(
        "Hats & gloves",
        "Apparel & Accessories > Clothing Accessories > Hats",
        "hat",
        (
            "Merino beanie",
            "Sun hat with neck cape",
            "Windproof fleece gloves",
            "Insulated mittens",
            "Multifunctional neck gaiter",
        ),
        (
            "merino wool that stays warm when damp",
            "UPF 50+ sun protection",
            "touch-screen fingertips",
            "a windproof membrane",
            "a reflective logo",
        ),
        (14, 59),
        sizes=("S/M", "L/XL"),
        colors=("black", "mustard", "grey"),
    ),
    Line(
        "Camp furniture",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Camp Furniture",
        "chair",
        ("Featherlite camp chair", "Roll-top camp table", "Camp hammock with straps", "Folding camp stool"),
        (
            "a 120 kg load rating",
            "sets up in under a minute",
            "a carry bag with a shoulder strap",
            "anodised aluminium frame",
        ),
        (25, 149),
        colors=("black", "olive"),
    ),
    Line(
        "Gaiters & spikes",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking",
        "gaiter",
        ("Scree gaiters", "Winter trail microspikes", "Snowshoes 25"),
        ("a hook for the laces", "stainless steel spikes", "a heel lift for climbing", "a waterproof upper"),
        (25, 199),
        sizes=("S", "M", "L"),
    ),
    Line(
        "First aid & safety",
        "Health & Beauty > Health Care > First Aid",
        "first-aid",
        (
            "Trail first aid kit",
            "Emergency bivvy bag",
            "Whistle and signal mirror set",
            "Blister care kit",
            "Insect repellent 100 ml",
            "Sunscreen SPF 50 stick",
        ),
        (
            "a waterproof pouch",
            "weighs under 150 g",
            "reflects 90% of body heat",
            "a printed first-aid guide",
        ),
        (6, 49),
    ),
    Line(
        "Navigation",
        "Sporting Goods > Outdoor Recreation > Camping & Hiking > Compasses",
        "navigation",
        ("Baseplate compass", "Sighting compass", "Waterproof map case"),
        ("a global needle", "a declination adjustment", "a magnifier for map detail"),
        (12, 69),
    ),
)


def _price(rng: random.Random, low: int, high: int) -> Decimal:
    whole = rng.randint(low, high)
    return Decimal(whole) + Decimal(rng.choice(("0.00", "0.50", "0.90", "0.95", "0.99")))


def rows() -> list[list[str]]:
    rng = random.Random(20241122)
    out: list[list[str]] = []
    counter = 0
    for line in LINES:
        for name in line.names:
            brand = rng.choice(BRANDS)
            counter += 1
            group = f"TH-{counter:03d}"
            features = rng.sample(line.features, k=min(3, len(line.features)))
            base_price = _price(rng, *line.price)
            colors = list(line.colors) or [""]
            sizes = list(line.sizes) or [""]
            # Keep ~300 items: most lines vary by colour x (a few) sizes.
            if line.category == "Climbing" and not any(w in name for w in ("harness", "helmet")):
                sizes = [""]
            if len(sizes) > 4:
                sizes = sorted(rng.sample(sizes, k=4), key=sizes.index)
            if len(colors) > 2:
                colors = rng.sample(colors, k=2)
            material = rng.choice(line.materials) if line.materials else ""
            gender = rng.choice(("men", "women")) if line.gendered else ""
            on_sale = rng.random() < 0.12
            for color in colors:
                for size in sizes:
                    suffix = "-".join(
                        p.replace(" ", "").replace("/", "")[:4].upper() for p in (color, size) if p
                    )
                    item_id = f"{group}-{suffix}" if suffix else group
                    title = name
                    if gender:
                        title = f"{name}, {gender}'s"
                    detail = ", ".join(p for p in (color, f"size {size}" if size else "") if p)
                    if detail:
                        title = f"{title} ({detail})"
                    roll = rng.random()
                    availability = (
                        "out of stock" if roll < 0.1 else ("preorder" if roll < 0.13 else "in stock")
                    )
                    description = (
                        f"The {name} from {brand}: {features[0]}, {features[1]}"
                        + (f" and {features[2]}" if len(features) > 2 else "")
                        + "."
                        + (f" Made of {material}." if material else "")
                        + " Backed by our two-year warranty."
                    )
                    price = base_price + (Decimal(5) if size in ("XL", "long", "46") else Decimal(0))
                    sale = (price * Decimal("0.8")).quantize(Decimal("0.01")) if on_sale else None
                    out.append(
                        [
                            item_id,
                            title,
                            description,
                            availability,
                            "new",
                            f"{price:.2f} EUR",
                            f"{sale:.2f} EUR" if sale else "",
                            f"{SHOP_URL}/products/{item_id.lower()}",
                            f"/static/demo/{line.image}.svg",
                            brand,
                            line.google_category,
                            line.category,
                            group if len(colors) * len(sizes) > 1 else "",
                            color,
                            size,
                            material,
                            gender,
                        ]
                    )
    return out


def render() -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TEMPLATE_ROW)
    writer.writerow(HEADER)
    writer.writerows(rows())
    return buffer.getvalue()


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")
    print(f"{OUT}: {len(rows())} items")


if __name__ == "__main__":
    main()
