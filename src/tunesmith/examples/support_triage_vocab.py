"""The vocabulary of the support-triage demo data: the labels, the instructions, and the parts an email is
composed from (greetings, cues, details, names), and the ``Problem`` shape. What goes wrong, the problem
templates each email is built around, is in ``support_triage_problems.py``. Pure data; ``make_support_triage.py``
samples from both."""

from __future__ import annotations

from dataclasses import dataclass

CATEGORIES = ("billing", "technical", "account", "shipping", "refund", "feedback")
PRIORITIES = ("low", "medium", "high", "urgent")
SENTIMENTS = ("positive", "neutral", "negative")
HARDWARE = ("PixelPad", "EchoBuds")
SOFTWARE = ("CloudSync", "Streamly", "Vaultly", "TaskHive")
PRODUCTS = (*SOFTWARE, *HARDWARE)
# The product sets a problem applies to, short because the problem tables name one per problem.
ANY = PRODUCTS
HW = HARDWARE
SW = SOFTWARE


@dataclass(frozen=True)
class Problem:
    """One kind of problem: its summary label, the products it applies to and its phrasings."""

    summary: str
    products: tuple[str, ...]
    texts: tuple[str, ...]


INSTRUCTIONS = """\
You triage customer support emails. Read the email and reply with a single JSON object on one line, \
with no other text before or after it.

The object has exactly these five keys, in this order:

"category": what the email is about. One of "billing" (charges, invoices, payment methods, plans), \
"technical" (bugs, crashes, syncing, connection or device problems), "account" (login, password, \
two-factor, profile, account settings), "shipping" (deliveries, tracking, damaged or missing packages), \
"refund" (asking for money back or to return a purchase), "feedback" (suggestions, opinions, feature \
requests).

"priority": how fast it must be handled. One of "low", "medium", "high", "urgent". Use the cues in the \
email: "no rush" means low; "this week" means medium; deadlines, "as soon as possible" or repeated \
messages mean high; blocked teams, outages or "urgent" mean urgent.

"sentiment": the customer's tone. One of "positive", "neutral", "negative".

"product": the product the email is about. One of "CloudSync", "PixelPad", "Streamly", "Vaultly", \
"TaskHive", "EchoBuds".

"summary": a short lowercase phrase of 4 to 9 words describing the problem.
"""


# Optional extra sentences per category, giving concrete but label-neutral details.
DETAILS: dict[str, tuple[str, ...]] = {
    "billing": (
        "My account email is {email}.",
        "I am on the {plan} plan.",
        "The transaction reference is {code}.",
        "I have been a paying customer for {years} years.",
    ),
    "technical": (
        "I already tried reinstalling and restarting, nothing changed.",
        "I am on version {version}.",
        "It happens on my {device}.",
        "The error code I see is {code}.",
        "I cleared the cache as suggested in your help center.",
    ),
    "account": (
        "The account is registered to {email}.",
        "I have had this account for {years} years.",
        "I can verify my identity if needed.",
        "I usually log in from my {device}.",
    ),
    "shipping": (
        "I ordered it on {date}.",
        "It was shipped with {carrier}.",
        "The order was placed under {email}.",
        "I chose the {color} version.",
    ),
    "refund": (
        "The order number is {order}.",
        "The payment was made on {date}.",
        "My account email is {email}.",
        "I have the receipt if you need it.",
    ),
    "feedback": (
        "I have used it almost daily for {years} years.",
        "I mostly use it on my {device}.",
        "A few friends of mine said the same thing.",
    ),
}

GREETINGS = (
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hello support team,",
    "Dear {product} support,",
    "Good morning,",
    "Good afternoon,",
    "Hey,",
    "To whom it may concern,",
    "",
)

OPENINGS = (
    "",
    "",
    "My name is {name} and I use {product}.",
    "I'm writing about {product}.",
    "I hope you are doing well.",
    "I have a question about {product}.",
    "I'm contacting you regarding {product}.",
    "Quick message about {product}.",
)

# Label-neutral background sentences that only add natural length and noise.
FILLERS = (
    "I've been using {product} for about {years} years now.",
    "I use it mostly for work, sometimes at home too.",
    "I tried searching your help center first but could not find an answer.",
    "I also asked in the community forum, but nobody replied.",
    "Sorry for the long message, I just want to give you the full picture.",
    "A colleague suggested I contact you directly about this.",
    "I'm not very technical, so please keep the answer simple.",
    "I checked the FAQ page on your website before writing.",
    "My partner uses {product} as well, so this affects both of us.",
    "I'm writing from my {device} in case that matters.",
    "I first noticed this around {date}.",
)

PRIORITY_CUES: dict[str, tuple[str, ...]] = {
    "low": (
        "No rush on this, whenever you get a chance.",
        "This is not urgent at all, so take your time.",
        "Whenever you get a chance is fine, there is no hurry.",
        "It's a minor thing, so no rush.",
        "Low priority, just wanted to mention it.",
    ),
    "medium": (
        "It would be good to get this sorted this week.",
        "Could you look into this in the next few days?",
        "I can work around it for now, but I'd like it fixed this week.",
        "Please get back to me within the next few days.",
        "Not an emergency, but I'd appreciate an answer this week.",
    ),
    "high": (
        "Please look into this as soon as possible.",
        "This is the third time I write about this.",
        "I need this resolved before {weekday}.",
        "I have a deadline on {date}, so I need this fixed before then.",
        "Please handle this as soon as possible, it is important to me.",
        "I already wrote twice and this is the third time I write.",
    ),
    "urgent": (
        "URGENT: our whole team is blocked and nobody can work.",
        "This is urgent, we are completely blocked right now.",
        "This is an emergency, I need this fixed today.",
        "Urgent please: our whole team is blocked until this is fixed.",
        "We are losing money every hour this goes on, this is urgent.",
    ),
}

SENTIMENT_CUES: dict[str, tuple[str, ...]] = {
    "positive": (
        "I really love {product}, it has been great so far.",
        "Your team has always been fantastic, thanks so much!",
        "Overall I'm a very happy customer, keep up the great work.",
        "Thanks a lot, you guys are awesome!",
        "I'm delighted with {product} and really appreciate your help.",
        "Great product, I recommend it to everyone!",
    ),
    "neutral": (
        "Let me know if you need any more information.",
        "Please advise on the next steps.",
        "I can provide screenshots if that helps.",
        "Please let me know how to proceed.",
        "I look forward to your reply.",
    ),
    "negative": (
        "Honestly, I'm really frustrated with this.",
        "This is completely unacceptable.",
        "I'm very disappointed with {product} and your service.",
        "If this is not fixed I will cancel and switch to a competitor.",
        "I'm angry that I have to deal with this at all.",
        "This is ridiculous and a total waste of my time.",
    ),
}

SIGNOFFS = ("Best,", "Thanks,", "Regards,", "Kind regards,", "Cheers,", "Best regards,", "Sincerely,", "")

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
    "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wei", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Adams", "Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber",
)  # fmt: skip
AGENTS = ("Priya", "Marco", "Lena", "Tom", "Aisha", "Kenji")
DEVICES = (
    "iPhone 15", "Pixel 8", "Galaxy S23", "MacBook Air", "Windows 11 laptop", "iPad", "Chromebook",
    "Android phone", "work PC", "smart TV",
)  # fmt: skip
PLANS = ("Basic", "Pro", "Family", "Business", "Premium")
CARRIERS = ("UPS", "DHL", "FedEx", "USPS", "DPD")
COLORS = ("black", "white", "silver", "blue", "rose gold")
LANGUAGES = ("Spanish", "Turkish", "Polish", "Vietnamese", "Portuguese", "Greek")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")

CATEGORY_PRIORITY_WEIGHTS: dict[str, tuple[int, ...]] = {
    "feedback": (6, 4, 1, 1),
}
DEFAULT_PRIORITY_WEIGHTS = (1, 1, 1, 1)
CATEGORY_SENTIMENT_WEIGHTS: dict[str, tuple[int, ...]] = {
    "feedback": (3, 2, 2),
    "refund": (1, 2, 2),
}
DEFAULT_SENTIMENT_WEIGHTS = (1, 1, 1)
