"""The problem templates of the support-triage demo data: per category, each kind of problem with its
summary label, the products it can happen to and its phrasings. Pure data; the labels and the rest of an
email's wording are in ``support_triage_vocab.py``."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.examples.support_triage_vocab import HARDWARE, PRODUCTS, SOFTWARE


@dataclass(frozen=True)
class Problem:
    """One kind of problem: its summary label, the products it applies to and its phrasings."""

    summary: str
    products: tuple[str, ...]
    texts: tuple[str, ...]


ANY = PRODUCTS
HW = HARDWARE
SW = SOFTWARE

PROBLEMS: dict[str, tuple[Problem, ...]] = {
    "billing": (
        Problem(
            "double charge on monthly invoice",
            ANY,
            (
                "I was charged twice for my {product} subscription this month, two payments of {amount} on {date}.",
                "My bank statement shows the same {product} charge of {amount} two times on {date}.",
            ),
        ),
        Problem(
            "wrong plan price on invoice",
            SW,
            (
                "My latest {product} invoice says {amount}, but the {plan} plan I signed up for costs less than that.",
                "The {product} invoice from {date} bills me {amount}, which is not the price of my {plan} plan.",
            ),
        ),
        Problem(
            "card declined when renewing subscription",
            SW,
            (
                "My card keeps getting declined when {product} tries to renew my {plan} subscription, even "
                "though the card works everywhere else.",
                "The {product} renewal failed with a 'payment declined' message, but my card is valid until next year.",
            ),
        ),
        Problem(
            "charged after cancelling subscription",
            SW,
            (
                "I cancelled my {product} subscription last month, yet I was charged {amount} again on {date}.",
                "Even though I cancelled {product} weeks ago, another payment of {amount} went out on {date}.",
            ),
        ),
        Problem(
            "need invoice with company details",
            ANY,
            (
                "I need an invoice for my {product} purchase of {amount} that shows our company name and VAT number.",
                "Our accounting team needs a proper invoice with company details for the {product} "
                "payment of {amount}.",
            ),
        ),
        Problem(
            "update payment method on file",
            SW,
            (
                "I want to replace the credit card on my {product} account with a new one, but the billing "
                "page gives an error.",
                "How do I change the payment method for {product}? My old card expired and I cannot find the option.",
            ),
        ),
        Problem(
            "unexpected price increase on renewal",
            SW,
            (
                "My {product} {plan} plan renewed at {amount} instead of the usual price, and I never got "
                "a notice about an increase.",
                "The {product} renewal on {date} cost {amount}, much more than last year, without any warning.",
            ),
        ),
        Problem(
            "charged for plan upgrade never requested",
            SW,
            (
                "I was moved to the {product} {plan} plan and charged {amount}, but I never asked for an upgrade.",
                "Somehow my {product} account was upgraded to {plan} and billed {amount} without my consent.",
            ),
        ),
        Problem(
            "missing receipt for recent payment",
            ANY,
            (
                "I paid {amount} for {product} on {date} but never received a receipt by email.",
                "There is no receipt in my inbox or in my account for the {product} payment of {amount} on {date}.",
            ),
        ),
        Problem(
            "tax charged incorrectly on order",
            HW,
            (
                "My {product} order {order} was charged sales tax twice, the total came to {amount}.",
                "The checkout for my {product} added tax that should not apply, order {order} ended up at {amount}.",
            ),
        ),
    ),
    "technical": (
        Problem(
            "app crashes on startup",
            SW,
            (
                "{product} crashes right after I open it on my {device}, before the main screen even loads.",
                "Since the update to version {version}, {product} closes itself on startup on my {device}.",
            ),
        ),
        Problem(
            "files not syncing between devices",
            ("CloudSync", "TaskHive", "Vaultly"),
            (
                "{product} stopped syncing between my {device} and my other computer, changes from {date} "
                "never showed up.",
                "My data is not syncing in {product}: what I change on my {device} does not appear on my "
                "other devices.",
            ),
        ),
        Problem(
            "video playback keeps buffering",
            ("Streamly",),
            (
                "Every show on {product} keeps buffering every few seconds on my {device}, even though my "
                "internet is fast.",
                "Playback in {product} freezes and buffers constantly on my {device}, which makes it unwatchable.",
            ),
        ),
        Problem(
            "earbuds will not pair with phone",
            ("EchoBuds",),
            (
                "My {product} will not pair with my {device}, the light just blinks and nothing shows up in Bluetooth.",
                "I cannot get my {product} to connect to my {device}, pairing fails every single time.",
            ),
        ),
        Problem(
            "tablet battery drains very fast",
            ("PixelPad",),
            (
                "My {product} battery goes from full to empty in about two hours, even when I barely use it.",
                "Since updating to version {version}, the battery of my {product} drains extremely fast.",
            ),
        ),
        Problem(
            "error message when saving changes",
            SW,
            (
                "Whenever I try to save changes in {product} I get the error 'Something went wrong (code {code})'.",
                "{product} shows error {code} every time I save something on my {device}.",
            ),
        ),
        Problem(
            "tablet touchscreen stops responding to taps",
            ("PixelPad",),
            (
                "The touchscreen on my {product} randomly stops responding and I have to restart it.",
                "My {product} screen freezes and ignores taps several times a day since version {version}.",
            ),
        ),
        Problem(
            "audio cuts out in one ear",
            ("EchoBuds",),
            (
                "The left earbud of my {product} keeps cutting out while the right one plays fine.",
                "Sound in one of my {product} drops every few minutes when connected to my {device}.",
            ),
        ),
        Problem(
            "app very slow after latest update",
            SW,
            (
                "After the version {version} update, {product} takes ages to load anything on my {device}.",
                "{product} has become extremely slow since the last update, every click takes seconds.",
            ),
        ),
        Problem(
            "notifications not arriving on device",
            SW,
            (
                "I no longer receive any notifications from {product} on my {device}, although they are turned on.",
                "Push notifications from {product} stopped working on my {device} around {date}.",
            ),
        ),
    ),
    "account": (
        Problem(
            "cannot log in to account",
            SW,
            (
                "I cannot log in to my {product} account, it says my password is wrong even though I am "
                "sure it is right.",
                "Every time I try to sign in to {product} with {email} I get 'invalid credentials'.",
            ),
        ),
        Problem(
            "password reset email never arrives",
            SW,
            (
                "I requested a password reset for {product} several times but the email never arrives at {email}.",
                "The {product} 'forgot password' link does not send anything to {email}, not even to spam.",
            ),
        ),
        Problem(
            "lost access to two-factor device",
            SW,
            (
                "I lost the phone I used for two-factor authentication and now I am locked out of {product}.",
                "My old phone with the {product} two-factor codes broke, so I cannot get past the verification step.",
            ),
        ),
        Problem(
            "change email address on account",
            ANY,
            (
                "I would like to change the email address on my {product} account from {email} to my new work address.",
                "How can I update the login email of my {product} account? {email} is no longer in use.",
            ),
        ),
        Problem(
            "account locked after failed attempts",
            SW,
            (
                "My {product} account got locked after a few failed login attempts and it is still locked a day later.",
                "{product} says my account is temporarily locked, but it has been like that since {date}.",
            ),
        ),
        Problem(
            "request to delete account and data",
            ANY,
            (
                "Please delete my {product} account ({email}) and all the personal data you hold about me.",
                "I want to close my {product} account permanently and have my data erased.",
            ),
        ),
        Problem(
            "suspicious login from unknown location",
            SW,
            (
                "I got an alert about a {product} login from a country I have never been to, on {date}.",
                "Someone seems to have signed in to my {product} account from an unknown device yesterday.",
            ),
        ),
        Problem(
            "add team member to shared account",
            ("TaskHive", "CloudSync", "Vaultly"),
            (
                "I am trying to add a colleague to our {product} {plan} workspace but the invite button is greyed out.",
                "How do I give a new team member access to our shared {product} account?",
            ),
        ),
        Problem(
            "username shows wrong name on profile",
            ANY,
            (
                "My {product} profile shows someone else's name instead of mine, and I cannot edit it.",
                "The name on my {product} account is wrong and the profile settings page will not let me change it.",
            ),
        ),
    ),
    "shipping": (
        Problem(
            "package not delivered past estimated date",
            HW,
            (
                "My {product} order {order} was supposed to arrive on {date}, but it still has not been delivered.",
                "The estimated delivery date for my {product} (order {order}) was {date} and nothing has arrived.",
            ),
        ),
        Problem(
            "tracking number shows no updates",
            HW,
            (
                "The {carrier} tracking number for my {product} order {order} has not updated in a week.",
                "Tracking for order {order} with my {product} has said 'label created' since {date}.",
            ),
        ),
        Problem(
            "package arrived damaged in transit",
            HW,
            (
                "My {product} arrived today in a crushed box and the device has a cracked corner. Order {order}.",
                "The package with my {product} (order {order}) was badly damaged when {carrier} delivered it.",
            ),
        ),
        Problem(
            "wrong item received in package",
            HW,
            (
                "I ordered a {product} in {color} but the box from order {order} contained a different item.",
                "Order {order} arrived, but instead of my {product} there was something I never ordered.",
            ),
        ),
        Problem(
            "change shipping address before dispatch",
            HW,
            (
                "I need to change the shipping address of my {product} order {order} before it ships.",
                "I moved last week, can you update the delivery address for order {order} ({product})?",
            ),
        ),
        Problem(
            "package marked delivered but missing",
            HW,
            (
                "{carrier} marked my {product} order {order} as delivered on {date}, but there is no package anywhere.",
                "Tracking says my {product} was delivered, but I never received it. Order {order}.",
            ),
        ),
        Problem(
            "accessory missing from package",
            HW,
            (
                "My {product} arrived, but the charging cable was missing from the box. Order {order}.",
                "The {product} from order {order} came without the accessories listed on the product page.",
            ),
        ),
        Problem(
            "request for faster shipping option",
            HW,
            (
                "Is it possible to upgrade the shipping on my {product} order {order} to express delivery?",
                "Can my {product} order {order} be sent with a faster shipping method than {carrier} standard?",
            ),
        ),
    ),
    "refund": (
        Problem(
            "refund for cancelled subscription",
            SW,
            (
                "I cancelled {product} on {date} and would like a refund of the {amount} I paid for the unused period.",
                "Please refund the {amount} for my {product} subscription, I cancelled it right after the renewal.",
            ),
        ),
        Problem(
            "return defective device for refund",
            HW,
            (
                "My {product} stopped working after a few days and I want to return it for a full refund. "
                "Order {order}.",
                "I'd like to send back my faulty {product} (order {order}) and get my {amount} back.",
            ),
        ),
        Problem(
            "refund not received after return",
            HW,
            (
                "I returned my {product} on {date} but I still have not received the refund of {amount}.",
                "{carrier} shows my returned {product} arrived at your warehouse weeks ago, yet no refund "
                "for order {order}.",
            ),
        ),
        Problem(
            "refund for accidental purchase",
            ANY,
            (
                "I bought {product} by accident on {date} and would like my {amount} refunded.",
                "My kid purchased {product} without asking, could I get a refund of the {amount}?",
            ),
        ),
        Problem(
            "partial refund for service outage",
            ("Streamly", "CloudSync", "TaskHive"),
            (
                "{product} was down for most of the week around {date}, so I would like a partial refund "
                "for that time.",
                "Given the long {product} outage on {date}, I am asking for part of my {amount} back.",
            ),
        ),
        Problem(
            "refund to different payment method",
            ANY,
            (
                "My refund for {product} was approved, but the original card is closed. Can you send the "
                "{amount} to a new card?",
                "Can the {amount} refund for {product} go to a different payment method? My old card was cancelled.",
            ),
        ),
        Problem(
            "refund request within trial period",
            SW,
            (
                "I was charged {amount} for {product} even though I cancelled during the free trial, please refund it.",
                "I want my money back for {product}: I cancelled within the trial but still paid {amount}.",
            ),
        ),
        Problem(
            "return unopened item for refund",
            HW,
            (
                "I want to return my unopened {product} from order {order} and get a refund.",
                "The {product} I ordered ({order}) is still sealed. How do I return it for my money back?",
            ),
        ),
    ),
    "feedback": (
        Problem(
            "suggestion to add dark mode",
            SW,
            (
                "I would like to suggest adding a dark mode to {product}, it would be much easier on the "
                "eyes at night.",
                "Have you considered a dark theme for {product}? I use it a lot in the evening.",
            ),
        ),
        Problem(
            "feedback on redesigned user interface",
            ANY,
            (
                "I wanted to share my thoughts on the redesigned {product} interface that came with version {version}.",
                "Some feedback on the new {product} layout: the menus moved around quite a bit in the last update.",
            ),
        ),
        Problem(
            "request for offline mode",
            ("Streamly", "CloudSync", "TaskHive"),
            (
                "It would be great if {product} had an offline mode for when I travel without internet.",
                "Please consider letting {product} work offline, I often use it on trains.",
            ),
        ),
        Problem(
            "feature request for export to csv",
            ("TaskHive", "Vaultly", "CloudSync"),
            (
                "A feature request: could {product} let me export my data to a CSV file?",
                "I would love an 'export to CSV' button in {product} for my reports.",
            ),
        ),
        Problem(
            "feedback on sound quality",
            ("EchoBuds",),
            (
                "I wanted to give you some feedback on the sound quality of my {product}, especially the bass.",
                "A few thoughts about how my {product} sound compared to my previous earbuds.",
            ),
        ),
        Problem(
            "comment on recent price change",
            SW,
            (
                "I have some feedback about the recent price change for the {product} {plan} plan.",
                "Just sharing my opinion on the new {product} pricing that was announced on {date}.",
            ),
        ),
        Problem(
            "feedback on support agent interaction",
            ANY,
            (
                "I wanted to let you know that your agent {agent} helped me with {product} last week.",
                "A quick note about {agent} from your team, who handled my {product} question on {date}.",
            ),
        ),
        Problem(
            "suggestion for larger screen model",
            ("PixelPad",),
            (
                "Any plans for a bigger {product}? A larger screen model would be perfect for drawing.",
                "I'd like to suggest a {product} with a larger screen for people who use it for work.",
            ),
        ),
        Problem(
            "request for more language options",
            SW,
            (
                "Could {product} support more languages? My parents would love to use it in {language}.",
                "It would be nice if the {product} app were available in {language}.",
            ),
        ),
    ),
}
