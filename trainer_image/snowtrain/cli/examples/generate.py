"""Generate the example tables local mode seeds into its embedded Snowflake.

Run ``python -m snowtrain.cli.examples.generate`` to rewrite the three ``*.csv.gz`` files next
to this script. The output is deterministic (fixed seed, gzip mtime 0), so regenerating
produces byte-identical files and a diff means the templates changed.

The rows are built from templates (products, aspects, phrasings, people, issues) so that a
model has to learn words and not memorise a handful of sentences; they are synthetic and
carry no personal data:

- SENTIMENT(ID, TEXT, LABEL): product and service reviews labelled positive/negative/neutral.
- PROMPT_COMPLETION(ID, PROMPT, COMPLETION): support tickets and their one-line summaries.
- CORPUS(ID, TEXT): short encyclopedic / news-style paragraphs for pretraining.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611

PRODUCTS = {
    "electronics": [
        "wireless earbuds",
        "laptop",
        "phone case",
        "smartwatch",
        "bluetooth speaker",
        "e-reader",
        "USB-C charger",
        "mechanical keyboard",
        "4K monitor",
        "webcam",
        "noise-cancelling headphones",
        "tablet",
        "robot vacuum",
        "smart thermostat",
    ],
    "home": [
        "coffee maker",
        "blender",
        "air fryer",
        "desk lamp",
        "office chair",
        "mattress",
        "cast iron skillet",
        "kettle",
        "standing desk",
        "bed sheets",
        "toaster",
        "rice cooker",
    ],
    "outdoor": [
        "hiking boots",
        "rain jacket",
        "tent",
        "sleeping bag",
        "water bottle",
        "backpack",
        "bike helmet",
        "trail running shoes",
        "camping stove",
    ],
    "service": [
        "hotel stay",
        "food delivery",
        "car rental",
        "internet plan",
        "gym membership",
        "streaming subscription",
        "airline flight",
        "dentist visit",
        "moving company",
        "cloud storage plan",
        "banking app",
        "restaurant dinner",
    ],
}

ASPECTS = {
    "electronics": [
        "battery life",
        "sound quality",
        "screen",
        "setup",
        "build quality",
        "connectivity",
        "software updates",
        "price",
        "charging speed",
    ],
    "home": [
        "build quality",
        "ease of cleaning",
        "noise level",
        "price",
        "design",
        "durability",
        "instructions",
        "comfort",
        "size",
    ],
    "outdoor": [
        "fit",
        "waterproofing",
        "weight",
        "durability",
        "comfort",
        "price",
        "stitching",
        "grip",
    ],
    "service": [
        "customer support",
        "staff",
        "wait time",
        "price",
        "cleanliness",
        "communication",
        "booking process",
        "billing",
        "reliability",
    ],
}

POSITIVE_ASPECT = [
    "The {aspect} is excellent.",
    "Really impressed by the {aspect}.",
    "The {aspect} exceeded my expectations.",
    "Honestly the {aspect} is the best I've had.",
    "{Aspect} is fantastic for the money.",
    "Loved the {aspect}, no complaints at all.",
    "The {aspect} is superb and it shows.",
    "Great {aspect}, exactly as advertised.",
]
NEGATIVE_ASPECT = [
    "The {aspect} is terrible.",
    "Really disappointed with the {aspect}.",
    "The {aspect} stopped being acceptable after {period}.",
    "{Aspect} is awful, I regret paying for it.",
    "The {aspect} is a joke.",
    "Worst {aspect} I have ever dealt with.",
    "The {aspect} is poor and nobody seems to care.",
    "Had nothing but problems with the {aspect}.",
]
NEUTRAL_ASPECT = [
    "The {aspect} is okay, nothing special.",
    "The {aspect} is about what you'd expect.",
    "{Aspect} is average.",
    "The {aspect} is fine for everyday use.",
    "No strong feelings about the {aspect}.",
    "The {aspect} is similar to other ones I've used.",
]
POSITIVE_OPEN = [
    "Bought the {product} {period} ago and I love it.",
    "This {product} is a great purchase.",
    "Five stars for the {product}.",
    "Would definitely recommend this {product}.",
    "Our family is very happy with the {product}.",
    "The {product} works perfectly.",
    "So glad I chose this {product}.",
]
NEGATIVE_OPEN = [
    "Bought the {product} {period} ago and I regret it.",
    "Do not buy this {product}.",
    "One star for the {product}.",
    "The {product} broke after {period}.",
    "Very unhappy with the {product}.",
    "Returned the {product} after {period}.",
    "This {product} was a waste of money.",
]
NEUTRAL_OPEN = [
    "Got the {product} {period} ago.",
    "The {product} arrived on the expected date.",
    "Using the {product} for {period} now.",
    "This is my second {product}.",
    "Bought the {product} as a replacement for an older one.",
    "The {product} does what the description says.",
    "Picked up the {product} during a sale.",
]
POSITIVE_CLOSE = [
    "Would buy again.",
    "Highly recommended!",
    "Worth every penny.",
    "Thanks, team!",
    "Already told my friends about it.",
    "",
    "",
]
NEGATIVE_CLOSE = [
    "Avoid.",
    "I want a refund.",
    "Never again.",
    "Save your money.",
    "Support never answered my emails.",
    "",
    "",
]
NEUTRAL_CLOSE = [
    "It does the job.",
    "Might update this review later.",
    "Can't say more yet.",
    "Three stars.",
    "",
    "",
]
PERIODS = ["two days", "a week", "two weeks", "a month", "three months", "half a year", "a year"]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _review(rng: random.Random, label: str) -> str:
    category = rng.choice(list(PRODUCTS))
    product = rng.choice(PRODUCTS[category])
    aspects = rng.sample(ASPECTS[category], k=rng.choice([1, 1, 2]))
    opens, bodies, closes = {
        "positive": (POSITIVE_OPEN, POSITIVE_ASPECT, POSITIVE_CLOSE),
        "negative": (NEGATIVE_OPEN, NEGATIVE_ASPECT, NEGATIVE_CLOSE),
        "neutral": (NEUTRAL_OPEN, NEUTRAL_ASPECT, NEUTRAL_CLOSE),
    }[label]
    parts = [rng.choice(opens)]
    for aspect in aspects:
        parts.append(
            rng.choice(bodies).replace("{Aspect}", _cap(aspect)).replace("{aspect}", aspect)
        )
    if label == "neutral" and rng.random() < 0.3:
        # Mixed reviews read neutral overall: one good and one bad point.
        good, bad = rng.sample(ASPECTS[category], k=2)
        parts.append(f"The {good} is good but the {bad} could be better.")
    parts.append(rng.choice(closes))
    text = " ".join(p for p in parts if p)
    text = text.format(product=product, period=rng.choice(PERIODS))
    if rng.random() < 0.15:
        text = text.lower()
    return text


def sentiment_rows(rng: random.Random, n: int = 3000) -> list[dict[str, object]]:
    """Reviews with a balanced-ish label mix (40% positive, 35% negative, 25% neutral)."""
    labels = rng.choices(["positive", "negative", "neutral"], weights=[40, 35, 25], k=n)
    return [{"ID": i + 1, "TEXT": _review(rng, lab), "LABEL": lab} for i, lab in enumerate(labels)]


FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Emil",
    "Fatima",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
]
ISSUES = [
    ("cannot log in", "after resetting the password", "a working login"),
    ("was charged twice", "for the monthly plan", "a refund of the duplicate charge"),
    ("has not received the order", "placed {days} days ago", "a delivery update"),
    ("sees an error when exporting reports", "since the last update", "a fix or a workaround"),
    (
        "wants to cancel the subscription",
        "before the renewal date",
        "confirmation of the cancellation",
    ),
    ("reports the app crashes on start", "on an Android phone", "a fix"),
    ("received a damaged {product}", "in the latest delivery", "a replacement"),
    ("cannot connect the {product} to Wi-Fi", "after the firmware update", "setup help"),
    ("asks to change the shipping address", "for an open order", "the address updated"),
    ("reports slow dashboard loading", "for larger accounts", "better performance"),
    ("lost access to two-factor codes", "after switching phones", "2FA reset"),
    ("needs an invoice with the company VAT number", "for last quarter", "a corrected invoice"),
]
TRIED = [
    "restarting the device",
    "clearing the browser cache",
    "reinstalling the app",
    "using a different browser",
    "waiting a day",
    "contacting the bank",
    "nothing yet",
]
TONES = ["Polite", "Frustrated", "Urgent", "Calm", "Annoyed"]


def ticket_rows(rng: random.Random, n: int = 1500) -> list[dict[str, object]]:
    """Support tickets (prompt) and the summary an agent would write (completion)."""
    rows = []
    for i in range(n):
        name = rng.choice(FIRST_NAMES)
        issue, context, want = rng.choice(ISSUES)
        product = rng.choice(PRODUCTS["electronics"] + PRODUCTS["home"])
        days = rng.randint(3, 21)
        issue = issue.format(product=product)
        context = context.format(days=days)
        tried = rng.choice(TRIED)
        tone = rng.choice(TONES)
        order = f"#{rng.randint(10000, 99999)}"
        body = f"Hi, this is {name} (order {order}). "
        body += rng.choice(
            [
                f"I {_first_person(issue)} {context}. I tried {tried}. Please help, I need {want}.",
                f"Since yesterday I {_first_person(issue)} {context}. Tried {tried}, no luck. Can you sort out {want}?",
                f"Quick one: I {_first_person(issue)} {context}. I already tried {tried}. Looking for {want}.",
            ]
        )
        if tone in ("Frustrated", "Annoyed"):
            body += " This is the second time I'm writing about this."
        elif tone == "Urgent":
            body += " I need this resolved today."
        prompt = f"Summarize the support ticket in one line.\nTicket: {body}\nSummary:"
        completion = (
            f" {tone} customer {name} ({order}) {issue} {context}; tried {tried}; wants {want}."
        )
        rows.append({"ID": i + 1, "PROMPT": prompt, "COMPLETION": completion})
    return rows


def _first_person(issue: str) -> str:
    """'cannot log in' -> 'cannot log in'; 'was charged twice' -> 'was charged twice';
    'wants to cancel' -> 'want to cancel'; 'reports X' -> 'see X' (the ticket is first person)."""
    for third, first in (
        ("wants ", "want "),
        ("asks ", "would like "),
        ("reports ", "see that "),
        ("sees ", "see "),
        ("needs ", "need "),
        ("has not ", "have not "),
        ("lost ", "lost "),
        ("received ", "received "),
    ):
        if issue.startswith(third):
            return first + issue[len(third) :]
    return issue


TOWNS = [
    "Alderford",
    "Brightwater",
    "Caldmoor",
    "Dunmere",
    "Eastholm",
    "Fairhaven",
    "Glenrock",
    "Harrowgate",
    "Ivybridge",
    "Juniper Falls",
    "Kestrel Bay",
    "Larkspur",
]
RIVERS = ["Aven", "Brook", "Corran", "Dee", "Elm", "Fenn", "Greta"]
INDUSTRIES = [
    "fishing",
    "textile mills",
    "software companies",
    "tourism",
    "dairy farming",
    "shipbuilding",
    "a university",
    "wine making",
    "a regional hospital",
]
SEASONS = ["spring", "summer", "autumn", "winter"]
WEATHER = [
    "light rain",
    "strong winds",
    "clear skies",
    "heavy snow",
    "morning fog",
    "scattered showers",
    "a heat wave",
    "thunderstorms",
]
DISHES = [
    "lentil soup",
    "roast vegetables",
    "banana bread",
    "tomato risotto",
    "lemon pancakes",
    "chickpea curry",
    "mushroom pie",
    "apple crumble",
]
INGREDIENTS = [
    "onions",
    "garlic",
    "butter",
    "flour",
    "eggs",
    "olive oil",
    "fresh herbs",
    "brown sugar",
    "rice",
    "carrots",
    "cinnamon",
    "stock",
]


def _town_paragraph(rng: random.Random) -> str:
    town, river = rng.choice(TOWNS), rng.choice(RIVERS)
    pop = rng.randint(2, 180) * 1000
    year = rng.randint(1120, 1890)
    a, b = rng.sample(INDUSTRIES, 2)
    return (
        f"{town} is a town on the River {river} with a population of about {pop:,}. "
        f"It was first recorded in {year}, when a market charter was granted. "
        f"Its economy was long based on {a}; today {b} employs many residents. "
        f"The town is known for its {rng.choice(['stone bridge', 'old harbour', 'clock tower', 'botanical garden', 'annual fair'])}, "
        f"which draws visitors every {rng.choice(SEASONS)}."
    )


def _weather_paragraph(rng: random.Random) -> str:
    town = rng.choice(TOWNS)
    w1, w2 = rng.sample(WEATHER, 2)
    lo, hi = rng.randint(-8, 14), rng.randint(15, 33)
    day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
    return (
        f"Forecast for {town}: {w1} in the morning, turning to {w2} by {day} evening. "
        f"Temperatures range from {lo} to {hi} degrees. "
        f"{rng.choice(['Drivers should allow extra time.', 'A good day for the coast.', 'Keep an umbrella at hand.', 'Farmers expect the harvest to continue.'])}"
    )


def _recipe_paragraph(rng: random.Random) -> str:
    dish = rng.choice(DISHES)
    ings = rng.sample(INGREDIENTS, 4)
    minutes = rng.choice([15, 20, 25, 30, 40, 45, 60])
    return (
        f"To make {dish}, start with {ings[0]} and {ings[1]}. "
        f"Cook gently for a few minutes, then add {ings[2]}. "
        f"Stir in {ings[3]}, cover, and leave for {minutes} minutes. "
        f"Serve {rng.choice(['warm', 'hot', 'at room temperature', 'with crusty bread'])}; it keeps for {rng.randint(2, 5)} days."
    )


def _data_paragraph(rng: random.Random) -> str:
    table = rng.choice(["ORDERS", "CUSTOMERS", "EVENTS", "SENSOR_READINGS", "INVOICES"])
    col = rng.choice(["CREATED_AT", "REGION", "STATUS", "AMOUNT", "DEVICE_ID"])
    rows = rng.randint(1, 900)
    return (
        f"The {table} table holds about {rows} million rows. "
        f"Queries that filter on {col} are fast because the table is clustered by it. "
        f"{rng.choice(['Nightly jobs', 'Analysts', 'Dashboards', 'Training jobs'])} read it through a "
        f"{rng.choice(['small', 'medium', 'large'])} warehouse, "
        f"and results are cached for {rng.choice([1, 6, 12, 24])} hours."
    )


PARAGRAPHS: list[Callable[[random.Random], str]] = [
    _town_paragraph,
    _weather_paragraph,
    _recipe_paragraph,
    _data_paragraph,
]


def corpus_rows(rng: random.Random, n: int = 3000) -> list[dict[str, object]]:
    """Paragraphs of plain English for pretraining a small causal LM."""
    return [{"ID": i + 1, "TEXT": rng.choice(PARAGRAPHS)(rng)} for i in range(n)]


TABLES: dict[str, Callable[[random.Random], list[dict[str, object]]]] = {
    "SENTIMENT": sentiment_rows,
    "PROMPT_COMPLETION": ticket_rows,
    "CORPUS": corpus_rows,
}


def write_csv_gz(path: Path, rows: list[dict[str, object]]) -> None:
    """CSV with a header, gzip with mtime 0 so the bytes depend only on the rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode())


def main(out_dir: Path = HERE) -> list[Path]:
    """Write every example table to ``out_dir``; return the files written."""
    paths = []
    for table, make in TABLES.items():
        rows = make(random.Random(f"{SEED}-{table}"))
        path = out_dir / f"{table.lower()}.csv.gz"
        write_csv_gz(path, rows)
        print(f"{path.name}: {len(rows)} rows")
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
