"""The world that :mod:`trainer.generate` draws a shop from: the category tree and the customers' demographics.

The tree has departments, sub-categories and leaves; a leaf's path (``beauty/skin/moisturizer``) is an item's
category. Each leaf has a median price, a singular noun for item titles, an attribute schema and whether it is a
consumable (bought again when it runs out). Demographics carry the leanings that make a customer's age and gender
say something about their taste.
"""

from __future__ import annotations

from dataclasses import dataclass

# Attribute schemas: attribute name -> the values an item draws from uniformly.
_COLORS = ("black", "white", "grey", "navy", "blue", "red", "green", "beige", "pink", "brown")
SCHEMAS: dict[str, dict[str, tuple[str, ...]]] = {
    "none": {},
    "color": {"color": _COLORS},
    "apparel": {"color": _COLORS, "size": ("XS", "S", "M", "L", "XL", "XXL")},
    "shoes": {"color": _COLORS, "size": tuple(str(s) for s in range(36, 47))},
    "sports": {"color": _COLORS, "size": ("S", "M", "L")},
    "volume": {"size": ("30 ml", "50 ml", "100 ml", "250 ml", "500 ml")},
    "shade": {"shade": ("fair", "light", "medium", "tan", "deep")},
    "material": {"material": ("oak", "walnut", "pine", "metal", "glass", "fabric"), "color": _COLORS},
    "bedding": {"size": ("single", "double", "queen", "king"), "color": _COLORS},
    "weight": {"size": ("250 g", "500 g", "1 kg", "2 kg")},
    "pack": {"size": ("pack of 1", "pack of 4", "pack of 12", "pack of 24")},
    "baby_size": {"size": ("newborn", "size 1", "size 2", "size 3", "size 4", "size 5")},
    "baby_age": {"age_range": ("0-6 months", "6-12 months", "12-24 months")},
    "pet": {"life_stage": ("junior", "adult", "senior")},
}


@dataclass(frozen=True)
class Department:
    """A top-level category: its traffic, how its consumables are used up, and its sub-categories."""

    share: float  # share of the shop's traffic
    replenish_days: float  # how long a consumable of this department lasts
    adjectives: tuple[str, ...]  # for item titles
    # sub-category -> (attribute schema, leaves as (slug, singular noun for titles, median price, consumable))
    subcategories: dict[str, tuple[str, tuple[tuple[str, str, float, bool], ...]]]


# fmt: off
TAXONOMY: dict[str, Department] = {
    "beauty": Department(0.12, 30, ("Hydrating", "Gentle", "Radiant", "Daily", "Nourishing", "Natural"), {
        "skin": ("volume", (("moisturizer", "Moisturizer", 24, True), ("cleanser", "Cleanser", 14, True),
                            ("serum", "Serum", 32, True), ("sunscreen", "Sunscreen", 18, True))),
        "hair": ("volume", (("shampoo", "Shampoo", 9, True), ("conditioner", "Conditioner", 9, True),
                            ("hair-oil", "Hair Oil", 16, True), ("styling", "Styling Gel", 11, True))),
        "makeup": ("shade", (("lipstick", "Lipstick", 15, True), ("mascara", "Mascara", 13, True),
                             ("foundation", "Foundation", 26, True), ("eyeliner", "Eyeliner", 10, True))),
        "fragrance": ("volume", (("perfume", "Eau de Parfum", 68, False), ("cologne", "Cologne", 55, False),
                                 ("body-mist", "Body Mist", 19, True))),
    }),
    "electronics": Department(0.12, 0, ("Wireless", "Smart", "Pro", "Ultra", "Compact", "Portable"), {
        "phones": ("color", (("smartphones", "Smartphone", 520, False), ("cases", "Phone Case", 18, False),
                             ("chargers", "Charger", 22, False),
                             ("screen-protectors", "Screen Protector", 12, False))),
        "audio": ("color", (("headphones", "Headphones", 120, False), ("earbuds", "Earbuds", 80, False),
                            ("speakers", "Speaker", 95, False), ("soundbars", "Soundbar", 240, False))),
        "computers": ("color", (("laptops", "Laptop", 900, False), ("monitors", "Monitor", 260, False),
                                ("keyboards", "Keyboard", 60, False), ("mice", "Mouse", 35, False))),
        "tv-video": ("none", (("televisions", "Television", 650, False),
                              ("streaming-devices", "Streaming Stick", 45, False),
                              ("projectors", "Projector", 380, False))),
    }),
    "fashion": Department(0.20, 0, ("Classic", "Slim-Fit", "Relaxed", "Essential", "Vintage", "Everyday"), {
        "women": ("apparel", (("dresses", "Dress", 55, False), ("tops", "Top", 28, False),
                              ("jeans", "Jeans", 60, False), ("skirts", "Skirt", 40, False))),
        "men": ("apparel", (("shirts", "Shirt", 42, False), ("t-shirts", "T-Shirt", 18, False),
                            ("chinos", "Chinos", 50, False), ("jackets", "Jacket", 110, False))),
        "shoes": ("shoes", (("sneakers", "Sneakers", 75, False), ("boots", "Boots", 120, False),
                            ("sandals", "Sandals", 40, False), ("running-shoes", "Running Shoes", 95, False))),
        "accessories": ("color", (("handbags", "Handbag", 85, False), ("belts", "Belt", 30, False),
                                  ("scarves", "Scarf", 25, False), ("sunglasses", "Sunglasses", 60, False))),
    }),
    "home": Department(0.11, 0, ("Modern", "Rustic", "Minimalist", "Cozy", "Premium", "Handcrafted"), {
        "kitchen": ("color", (("cookware", "Frying Pan", 45, False), ("knives", "Chef's Knife", 55, False),
                              ("kettles", "Kettle", 35, False), ("coffee-makers", "Coffee Maker", 90, False))),
        "furniture": ("material", (("sofas", "Sofa", 750, False), ("chairs", "Chair", 120, False),
                                   ("tables", "Table", 260, False), ("bookshelves", "Bookshelf", 150, False))),
        "bedding": ("bedding", (("duvets", "Duvet", 70, False), ("pillows", "Pillow", 25, False),
                                ("bed-sheets", "Bed Sheet Set", 45, False),
                                ("blankets", "Throw Blanket", 35, False))),
        "decor": ("color", (("lamps", "Lamp", 55, False), ("candles", "Scented Candle", 16, True),
                               ("rugs", "Rug", 120, False), ("vases", "Vase", 30, False))),
    }),
    "grocery": Department(0.14, 10, ("Organic", "Classic", "Whole Grain", "Roasted", "Fresh", "Family-Size"), {
        "pantry": ("weight", (("pasta", "Pasta", 2.5, True), ("rice", "Rice", 3.5, True),
                              ("olive-oil", "Olive Oil", 9, True), ("cereal", "Cereal", 4.5, True))),
        "beverages": ("weight", (("coffee", "Coffee", 9, True), ("tea", "Tea", 5, True),
                                 ("juice", "Juice", 3.5, True), ("sparkling-water", "Sparkling Water", 4, True))),
        "snacks": ("weight", (("chips", "Chips", 2.8, True), ("chocolate", "Chocolate", 3.2, True),
                              ("nuts", "Mixed Nuts", 6, True), ("cookies", "Cookies", 3, True))),
        "fresh": ("weight", (("fruit", "Fruit", 4, True), ("vegetables", "Vegetables", 3, True),
                             ("cheese", "Cheese", 6, True), ("bread", "Bread", 3, True))),
    }),
    "sports": Department(0.08, 0, ("Performance", "Lightweight", "All-Weather", "Training", "Trail", "Pro"), {
        "fitness": ("color", (("yoga-mats", "Yoga Mat", 30, False), ("dumbbells", "Dumbbell Set", 60, False),
                              ("resistance-bands", "Resistance Bands", 18, False),
                              ("kettlebells", "Kettlebell", 45, False))),
        "cycling": ("sports", (("bikes", "Bike", 650, False), ("helmets", "Helmet", 65, False),
                               ("bike-lights", "Bike Light", 25, False), ("gloves", "Cycling Gloves", 22, False))),
        "outdoor": ("color", (("tents", "Tent", 180, False), ("sleeping-bags", "Sleeping Bag", 90, False),
                              ("backpacks", "Backpack", 70, False), ("hiking-poles", "Hiking Poles", 45, False))),
        "team-sports": ("none", (("footballs", "Football", 25, False), ("basketballs", "Basketball", 28, False),
                                 ("tennis-rackets", "Tennis Racket", 90, False),
                                 ("shin-guards", "Shin Guards", 15, False))),
    }),
    "baby": Department(0.06, 14, ("Soft", "Gentle", "Hypoallergenic", "Comfort", "Everyday", "Organic"), {
        "diapering": ("baby_size", (("diapers", "Diapers", 22, True), ("wipes", "Baby Wipes", 6, True),
                                    ("diaper-cream", "Diaper Cream", 8, True))),
        "feeding": ("none", (("bottles", "Baby Bottle", 14, False), ("formula", "Infant Formula", 28, True),
                             ("baby-food", "Baby Food", 2.5, True), ("bibs", "Bib", 9, False))),
        "gear": ("color", (("strollers", "Stroller", 320, False), ("car-seats", "Car Seat", 210, False),
                           ("carriers", "Baby Carrier", 95, False))),
        "toys": ("baby_age", (("rattles", "Rattle", 10, False), ("soft-toys", "Soft Toy", 18, False),
                              ("play-mats", "Play Mat", 45, False))),
    }),
    "household": Department(0.09, 30, ("Eco", "Ultra", "Fresh Scent", "Sensitive", "Value", "Extra Strength"), {
        "cleaning": ("pack", (("detergent", "Laundry Detergent", 12, True), ("dish-soap", "Dish Soap", 4, True),
                              ("surface-cleaner", "Surface Cleaner", 5, True), ("sponges", "Sponges", 3.5, True))),
        "paper": ("pack", (("toilet-paper", "Toilet Paper", 9, True), ("paper-towels", "Paper Towels", 7, True),
                           ("tissues", "Tissues", 3, True))),
        "personal-care": ("none", (("toothpaste", "Toothpaste", 4, True), ("toothbrushes", "Toothbrush", 6, True),
                                   ("deodorant", "Deodorant", 5.5, True), ("body-wash", "Body Wash", 6, True),
                                   ("razors", "Razor Blades", 15, True))),
    }),
    "pets": Department(0.08, 21, ("Grain-Free", "Natural", "Durable", "Premium", "Everyday", "Gourmet"), {
        "dog": ("pet", (("dog-food", "Dog Food", 35, True), ("dog-treats", "Dog Treats", 8, True),
                        ("dog-toys", "Dog Toy", 12, False), ("leashes", "Leash", 20, False))),
        "cat": ("pet", (("cat-food", "Cat Food", 25, True), ("cat-litter", "Cat Litter", 14, True),
                        ("cat-toys", "Cat Toy", 8, False), ("scratching-posts", "Scratching Post", 40, False))),
    }),
}
# fmt: on

DEPARTMENTS = tuple(TAXONOMY)

# User demographics and the departments they lean towards (multipliers of the Dirichlet concentration).
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARE = (0.14, 0.24, 0.21, 0.17, 0.14, 0.10)
AGE_LEAN: dict[str, dict[str, float]] = {
    "18-24": {"electronics": 1.5, "fashion": 1.4, "baby": 0.2, "home": 0.7},
    "25-34": {"baby": 2.5, "fashion": 1.2},
    "35-44": {"baby": 1.8, "home": 1.3},
    "45-54": {"home": 1.4, "baby": 0.5},
    "55-64": {"home": 1.4, "baby": 0.3, "electronics": 0.8},
    "65+": {"baby": 0.3, "fashion": 0.7, "household": 1.3},
}
GENDERS = ("female", "male", "unspecified")
GENDER_SHARE = (0.49, 0.47, 0.04)
GENDER_LEAN: dict[str, dict[str, float]] = {
    "female": {"beauty": 1.8},
    "male": {"electronics": 1.5, "beauty": 0.6},
}
# Leaf-level lean: the women's and men's fashion sub-categories.
GENDER_SUBCATEGORY_LEAN: dict[str, dict[str, float]] = {
    "female": {"fashion/women": 3.0, "fashion/men": 0.3},
    "male": {"fashion/women": 0.2, "fashion/men": 3.0},
}
REGIONS = ("northeast", "midwest", "south", "west")
REGION_SHARE = (0.17, 0.21, 0.38, 0.24)
LOYALTY_TIERS = ("none", "bronze", "silver", "gold", "platinum")
LOYALTY_QUANTILES = (0.40, 0.70, 0.88, 0.97)  # tier boundaries on the activity ranking

# Share of session starts by hour of day (UTC): quiet at night, busiest in the evening.
HOURLY = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.8, 4, 4.2, 4, 3.8, 3.8, 4, 4.5, 5.5, 6.5, 7, 6, 4, 2)

# Syllables of made-up brand names.
# fmt: off
BRAND_HEADS = (
    "Nor", "Lu", "Ve", "Ka", "Zen", "Mar", "Ori", "Tal", "Bri", "Sol", "Ar", "El", "Fen", "Gra", "Hal", "Ix",
    "Jun", "Kel", "Lor", "Mo", "Nex", "Pel", "Quin", "Ro", "Sy", "Tor", "Ul", "Vi", "Wyn", "Ya",
)
BRAND_MIDDLES = ("", "", "", "a", "e", "i", "o", "an", "el", "or")
BRAND_TAILS = (
    "vik", "mera", "ra", "lo", "dex", "ton", "ly", "wood", "ford", "stone", "ia", "ex", "ica", "ora", "ley",
    "berg", "nia", "ward", "sen", "ix",
)
# fmt: on


@dataclass(frozen=True)
class Leaf:
    """One leaf category, with what its department and sub-category say about it."""

    path: str  # department/subcategory/leaf
    department: int
    subcategory: str
    slug: str
    noun: str
    median_price: float
    consumable: bool
    schema: str


def all_leaves() -> list[Leaf]:
    """Every leaf of the tree, department by department in the order of ``TAXONOMY``."""
    leaves = []
    for d, (department, spec) in enumerate(TAXONOMY.items()):
        for subcategory, (schema, entries) in spec.subcategories.items():
            for slug, noun, median_price, consumable in entries:
                path = f"{department}/{subcategory}/{slug}"
                leaves.append(Leaf(path, d, subcategory, slug, noun, float(median_price), consumable, schema))
    return leaves
